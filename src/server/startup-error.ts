/** A problem the operator must fix before the server can start: its message says which and how. */
export class StartupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StartupError";
  }
}
