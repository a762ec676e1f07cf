// @ts-check
/** The UI front end (filled in by part 2). */
export {};
