/**
 * A small typed W&B client for exactly the calls the replica and the artifact functions make (PROTOCOL.md):
 * GraphQL at `{base}/graphql`, file_stream at `{base}/files/{entity}/{project}/{run}/file_stream`, uploads to
 * the URLs the server hands out, downloads from `directUrl`s. Every call retries (http.ts).
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { scrub } from '../../secrets.js';
import { send, WandbError, withRetries, RetryableFailure, sendOnce, type RetryPolicy } from './http.js';
import * as Q from './queries.js';
import { retryPolicy, type WandbSettings } from './settings.js';

/** The file_stream body (PROTOCOL.md): per-file offsets are line numbers, so a re-send is idempotent. */
export interface FileStreamBody {
  files?: Record<string, { offset: number; content: string[] }>;
  uploaded?: string[];
  preempting?: boolean;
  complete?: boolean;
  exitcode?: number;
}

export interface ResumeStatus {
  historyLineCount: number;
  eventsLineCount: number;
  logLineCount: number;
  /** The last history lines (JSON text of a JSON array of line strings). */
  historyTail?: string;
  summaryMetrics?: string;
  config?: string;
}

export interface UpsertRunInput {
  name: string;
  displayName?: string;
  config?: Record<string, { value: unknown }>;
  tags?: string[];
  jobType?: string;
  groupName?: string;
  notes?: string;
  host?: string;
  program?: string;
}

export interface ArtifactRecord {
  id: string;
  state: string;
  digest: string;
  versionIndex?: number | null;
  metadata?: string | null;
}

export interface UploadTarget {
  uploadUrl: string | null;
  uploadHeaders: string[];
}

export class WandbClient {
  readonly policy: RetryPolicy;
  /** Never in a message: the key and whatever else the caller asks to keep out. */
  readonly secrets: readonly string[];
  private readonly auth: string;

  constructor(
    readonly settings: WandbSettings,
    extraSecrets: readonly string[] = [],
  ) {
    this.policy = retryPolicy(settings);
    this.secrets = [settings.apiKey, Buffer.from(`api:${settings.apiKey}`).toString('base64'), ...extraSecrets].filter((s) => s.length > 0);
    this.auth = `Basic ${Buffer.from(`api:${settings.apiKey}`).toString('base64')}`;
  }

  get entity(): string {
    return this.settings.entity;
  }

  get project(): string {
    return this.settings.project;
  }

  /** The key goes only to the W&B server itself, never to a signed storage URL it hands out. */
  private headersFor(url: string, extra: Record<string, string> = {}): Record<string, string> {
    const same = new URL(url).origin === new URL(this.settings.baseUrl).origin;
    return same ? { ...extra, authorization: this.auth } : extra;
  }

  async graphql<T>(operationName: string, query: string, variables: Record<string, unknown>, signal?: AbortSignal): Promise<T> {
    const url = `${this.settings.baseUrl}/graphql`;
    const what = `W&B GraphQL ${operationName}`;
    const body = JSON.stringify({ operationName, query, variables });
    return withRetries(
      what,
      this.policy,
      this.secrets,
      async () => {
        const res = await sendOnce({ method: 'POST', url, what, headers: this.headersFor(url, { 'content-type': 'application/json' }), body: () => ({ body }) }, this.policy, this.secrets, signal);
        let parsed: { data?: T; errors?: { message?: string }[] };
        try {
          parsed = (await res.json()) as typeof parsed;
        } catch (err) {
          throw new RetryableFailure(`unreadable answer (${(err as Error).message})`);
        }
        if (parsed.errors?.length) {
          const msg = scrub(parsed.errors.map((e) => e.message ?? '?').join('; '), this.secrets);
          throw new WandbError(`${what}: ${msg}`, false);
        }
        if (parsed.data === undefined || parsed.data === null) throw new WandbError(`${what}: the answer has no data`, false);
        return parsed.data;
      },
      signal,
    );
  }

  async viewerEntity(signal?: AbortSignal): Promise<string> {
    const data = await this.graphql<{ viewer: { entity?: string | null } | null }>('Viewer', Q.VIEWER, {}, signal);
    const entity = data.viewer?.entity;
    if (!entity) throw new WandbError('W&B did not name a default entity for this API key: set tracking.wandb.entity', false);
    return entity;
  }

  async upsertRun(input: UpsertRunInput, signal?: AbortSignal): Promise<{ id: string; name: string; historyLineCount: number }> {
    const data = await this.graphql<{ upsertBucket: { bucket: { id: string; name: string; historyLineCount?: number | null } } }>(
      'UpsertBucket',
      Q.UPSERT_BUCKET,
      {
        id: null,
        name: input.name,
        project: this.project,
        entity: this.entity,
        groupName: input.groupName ?? null,
        description: null,
        displayName: input.displayName ?? null,
        notes: input.notes ?? null,
        commit: null,
        config: input.config ? scrub(JSON.stringify(input.config), this.secrets) : null,
        host: input.host ?? null,
        debug: null,
        program: input.program ?? null,
        repo: null,
        jobType: input.jobType ?? null,
        state: null,
        sweep: null,
        tags: input.tags ?? null,
        summaryMetrics: null,
      },
      signal,
    );
    const b = data.upsertBucket.bucket;
    return { id: b.id, name: b.name, historyLineCount: b.historyLineCount ?? 0 };
  }

  /** What the server holds of a run; undefined when the run does not exist yet. */
  async resumeStatus(runName: string, signal?: AbortSignal): Promise<ResumeStatus | undefined> {
    const data = await this.graphql<{ model: { bucket: Partial<Record<keyof ResumeStatus, unknown>> | null } | null }>(
      'RunResumeStatus',
      Q.RUN_RESUME_STATUS,
      { project: this.project, entity: this.entity, name: runName },
      signal,
    );
    const b = data.model?.bucket;
    if (!b) return undefined;
    const count = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : 0);
    const text = (v: unknown) => (typeof v === 'string' ? v : v === null || v === undefined ? undefined : JSON.stringify(v));
    return {
      historyLineCount: count(b.historyLineCount),
      eventsLineCount: count(b.eventsLineCount),
      logLineCount: count(b.logLineCount),
      historyTail: text(b.historyTail),
      summaryMetrics: text(b.summaryMetrics),
      config: text(b.config),
    };
  }

  async fileStream(runName: string, body: FileStreamBody, signal?: AbortSignal): Promise<void> {
    const url = `${this.settings.baseUrl}/files/${encodeURIComponent(this.entity)}/${encodeURIComponent(this.project)}/${encodeURIComponent(runName)}/file_stream`;
    const text = JSON.stringify(body);
    const res = await send({ method: 'POST', url, what: 'W&B file_stream', headers: this.headersFor(url, { 'content-type': 'application/json' }), body: () => ({ body: text }) }, this.policy, this.secrets, signal);
    await res.arrayBuffer();
  }

  async createRunFiles(runName: string, files: string[], signal?: AbortSignal): Promise<Map<string, UploadTarget>> {
    const data = await this.graphql<{ createRunFiles: { uploadHeaders?: string[] | null; files: { name: string; uploadUrl: string | null }[] } }>(
      'CreateRunFiles',
      Q.CREATE_RUN_FILES,
      { entity: this.entity, project: this.project, run: runName, files },
      signal,
    );
    const headers = data.createRunFiles.uploadHeaders ?? [];
    return new Map(data.createRunFiles.files.map((f) => [f.name, { uploadUrl: f.uploadUrl, uploadHeaders: headers }]));
  }

  /** PUTs a local file (streamed, re-opened per attempt) to an upload URL the server handed out. */
  async uploadFile(target: UploadTarget & { uploadUrl: string }, localPath: string, what: string, signal?: AbortSignal): Promise<void> {
    const headers: Record<string, string> = {};
    for (const h of target.uploadHeaders) {
      const i = h.indexOf(':');
      if (i > 0) headers[h.slice(0, i).trim()] = h.slice(i + 1).trim();
    }
    const res = await send(
      {
        method: 'PUT',
        url: target.uploadUrl,
        what,
        headers: this.headersFor(target.uploadUrl, headers),
        body: async () => {
          const { size } = await stat(localPath);
          return { body: Readable.toWeb(createReadStream(localPath)) as ReadableStream<Uint8Array>, length: size };
        },
      },
      this.policy,
      this.secrets,
      signal,
    );
    await res.arrayBuffer();
  }

  async uploadBytes(target: UploadTarget & { uploadUrl: string }, bytes: Uint8Array, what: string, signal?: AbortSignal): Promise<void> {
    const headers: Record<string, string> = {};
    for (const h of target.uploadHeaders) {
      const i = h.indexOf(':');
      if (i > 0) headers[h.slice(0, i).trim()] = h.slice(i + 1).trim();
    }
    const res = await send({ method: 'PUT', url: target.uploadUrl, what, headers: this.headersFor(target.uploadUrl, headers), body: () => ({ body: new Blob([new Uint8Array(bytes)]), length: bytes.length }) }, this.policy, this.secrets, signal);
    await res.arrayBuffer();
  }

  /** A GET that retries until the response starts; the caller reads (and checks) the body. */
  async download(url: string, what: string, signal?: AbortSignal): Promise<Response> {
    return send({ method: 'GET', url, what, headers: this.headersFor(url) }, this.policy, this.secrets, signal);
  }

  // Artifacts, in the order wandb-core calls them.

  async createArtifact(input: Record<string, unknown>, signal?: AbortSignal): Promise<ArtifactRecord> {
    const data = await this.graphql<{ createArtifact: { artifact: ArtifactRecord } }>('CreateArtifact', Q.CREATE_ARTIFACT, { input }, signal);
    return data.createArtifact.artifact;
  }

  async createArtifactManifest(
    v: { artifactID: string; digest: string; runName: string; includeUpload: boolean },
    signal?: AbortSignal,
  ): Promise<{ id: string; upload?: UploadTarget }> {
    const data = await this.graphql<{ createArtifactManifest: { artifactManifest: { id: string; file: { uploadUrl?: string | null; uploadHeaders?: string[] | null } } } }>(
      'CreateArtifactManifest',
      Q.CREATE_ARTIFACT_MANIFEST,
      {
        artifactID: v.artifactID,
        baseArtifactID: null,
        name: 'wandb_manifest.json',
        digest: v.digest,
        entityName: this.entity,
        projectName: this.project,
        runName: v.runName,
        manifestType: 'FULL',
        includeUpload: v.includeUpload,
      },
      signal,
    );
    const m = data.createArtifactManifest.artifactManifest;
    return { id: m.id, upload: v.includeUpload ? { uploadUrl: m.file.uploadUrl ?? null, uploadHeaders: m.file.uploadHeaders ?? [] } : undefined };
  }

  /** One upload target per file, in the order given (uploadUrl null = the server already has those bytes). */
  async createArtifactFiles(files: { artifactID: string; artifactManifestID: string; name: string; md5: string }[], signal?: AbortSignal): Promise<UploadTarget[]> {
    const data = await this.graphql<{ createArtifactFiles: { files: { edges: { node: { uploadUrl: string | null; uploadHeaders?: string[] | null } }[] } } }>(
      'CreateArtifactFiles',
      Q.CREATE_ARTIFACT_FILES,
      { input: { artifactFiles: files.map((f) => ({ ...f, mimetype: null, uploadPartsInput: null })), clientMutationId: null, cloudRegionID: null, storageLayout: 'V2' } },
      signal,
    );
    const edges = data.createArtifactFiles.files.edges;
    if (edges.length !== files.length) throw new WandbError(`W&B GraphQL CreateArtifactFiles: asked for ${files.length} upload URLs, got ${edges.length}`, false);
    return edges.map((e) => ({ uploadUrl: e.node.uploadUrl, uploadHeaders: e.node.uploadHeaders ?? [] }));
  }

  async commitArtifact(artifactID: string, signal?: AbortSignal): Promise<{ id: string; digest: string; versionIndex?: number | null }> {
    const data = await this.graphql<{ commitArtifact: { artifact: { id: string; digest: string; versionIndex?: number | null } } }>('CommitArtifact', Q.COMMIT_ARTIFACT, { artifactID }, signal);
    return data.commitArtifact.artifact;
  }

  /** `name` is `<collection>:<alias or vN>`; undefined when there is no such artifact. */
  async artifactByName(name: string, signal?: AbortSignal): Promise<ArtifactRecord | undefined> {
    const data = await this.graphql<{ project: { artifactCollectionMembership: { versionIndex?: number | null; artifact: ArtifactRecord | null } | null } | null }>(
      'ArtifactMembershipByName',
      Q.ARTIFACT_MEMBERSHIP_BY_NAME,
      { entity: this.entity, project: this.project, name },
      signal,
    );
    const m = data.project?.artifactCollectionMembership;
    if (!m?.artifact) return undefined;
    return { ...m.artifact, versionIndex: m.artifact.versionIndex ?? m.versionIndex ?? null };
  }

  async artifactManifestUrl(artifactId: string, signal?: AbortSignal): Promise<string> {
    const data = await this.graphql<{ artifact: { currentManifest: { file: { directUrl: string } } | null } | null }>('ArtifactManifest', Q.FETCH_ARTIFACT_MANIFEST, { artifact_id: artifactId }, signal);
    const url = data.artifact?.currentManifest?.file.directUrl;
    if (!url) throw new WandbError(`W&B GraphQL ArtifactManifest: artifact ${artifactId} has no manifest (was it committed?)`, false);
    return url;
  }

  async artifactFileUrls(artifactId: string, signal?: AbortSignal): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    let cursor: string | null = null;
    for (;;) {
      type Page = { artifact: { files: { pageInfo: { hasNextPage: boolean; endCursor: string | null }; edges: { node: { name: string; directUrl: string } }[] } } | null };
      const data: Page = await this.graphql<Page>('ArtifactFileURLs', Q.ARTIFACT_FILE_URLS, { id: artifactId, cursor, perPage: 1000 }, signal);
      if (!data.artifact) throw new WandbError(`W&B GraphQL ArtifactFileURLs: artifact ${artifactId} not found`, false);
      for (const e of data.artifact.files.edges) out.set(e.node.name, e.node.directUrl);
      if (!data.artifact.files.pageInfo.hasNextPage) return out;
      cursor = data.artifact.files.pageInfo.endCursor;
    }
  }
}
