// Waiting in tests for something to have happened, never for a fixed time. Prefer an event
// (`once(emitter, name)`, a promise the stand-in resolves); `until` is for conditions no event
// announces (another process's output or state, a counter kept by a stand-in).

/** Resolves once `check()` holds; throws naming `what` if it does not within `timeoutMs`. */
export async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
