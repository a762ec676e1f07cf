/** Why an item was dropped. Kept as a closed list so run summaries are comparable between runs. */
export type SkipReason =
  | 'corrupt_image'
  | 'missing_image'
  | 'missing_caption'
  | 'unsafe_tar_entry'
  | 'truncated_shard'
  | 'unreadable_file'
  | 'bad_row';

/** Counts skipped items by reason, with the first few messages so a user can find the culprits. */
export class SkipCounts {
  readonly byReason: Partial<Record<SkipReason, number>> = {};
  readonly messages: string[] = [];

  constructor(private readonly maxMessages = 20) {}

  add(reason: SkipReason, message?: string, n = 1): void {
    this.byReason[reason] = (this.byReason[reason] ?? 0) + n;
    if (message !== undefined && this.messages.length < this.maxMessages) this.messages.push(message);
  }

  get total(): number {
    let t = 0;
    for (const v of Object.values(this.byReason)) t += v ?? 0;
    return t;
  }

  count(reason: SkipReason): number {
    return this.byReason[reason] ?? 0;
  }

  /** Plain object for summary.json: `{ total, by_reason, messages }`. */
  toJSON(): { total: number; by_reason: Partial<Record<SkipReason, number>>; messages: string[] } {
    return { total: this.total, by_reason: { ...this.byReason }, messages: [...this.messages] };
  }
}
