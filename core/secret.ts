// A wrapper for secrets (keys, tokens, credentials) that cannot print itself: JSON.stringify,
// util.inspect, template strings and console.log all show "[redacted]". Browser-safe.

const INSPECT = Symbol.for("nodejs.util.inspect.custom");
export const REDACTED = "[redacted]";

export class Secret<T> {
  readonly #value: T;

  constructor(value: T) {
    this.#value = value;
  }

  /** The secret itself; call only where it is used, never to log or serialise it. */
  reveal(): T {
    return this.#value;
  }

  toJSON(): string {
    return REDACTED;
  }

  toString(): string {
    return REDACTED;
  }

  [INSPECT](): string {
    return REDACTED;
  }
}
