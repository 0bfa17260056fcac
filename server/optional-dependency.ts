// Optional dependencies (package.json `optionalDependencies`): packages that only some
// configurations need. better-sqlite3 compiles native code and ioredis is a tenth of a server's
// memory; @divviup/dap and @divviup/prio3 serve only the demo and `veil client upload`. They are
// loaded on first use, so a client-only install (`npm install --omit=optional`) works without
// them, and a configuration that needs a missing one fails at start-up with a message naming
// the package and how to install it.

import { createRequire } from "node:module";
import { ProtocolError } from "../core/errors.js";

export type OptionalDependency = "better-sqlite3" | "ioredis" | "@divviup/dap" | "@divviup/prio3";

/** require() relative to this module; a CommonJS bundle of it (esbuild) has no import.meta.url but has require. */
function requireHere(name: string): unknown {
  return (typeof require === "function" ? require : createRequire(import.meta.url))(name);
}

function missing(name: OptionalDependency, purpose: string, cause: unknown): ProtocolError {
  return new ProtocolError(
    "CFG_ERR_INVALID",
    `${purpose} needs the optional dependency ${name}, which is not installed (npm install ${name})`,
    { cause },
  );
}

function isMissing(e: unknown, name: string): boolean {
  const err = e as { code?: unknown; message?: unknown } | null;
  const code = err?.code;
  if (code !== "MODULE_NOT_FOUND" && code !== "ERR_MODULE_NOT_FOUND") return false;
  // Only the package itself: a broken install of one of its own dependencies is another problem.
  return typeof err?.message === "string" && (err.message.includes(`'${name}'`) || err.message.includes(`"${name}"`));
}

/** Loads a CommonJS optional dependency synchronously (the stores open synchronously). */
export function requireOptional<T>(name: "better-sqlite3" | "ioredis", purpose: string): T {
  try {
    return requireHere(name) as T;
  } catch (e) {
    throw isMissing(e, name) ? missing(name, purpose, e) : e;
  }
}

/** Runs `load` (a dynamic import of a module that imports `name`), naming `name` if it is missing. */
export async function importOptional<T>(load: () => Promise<T>, name: OptionalDependency, purpose: string): Promise<T> {
  try {
    return await load();
  } catch (e) {
    throw isMissing(e, name) ? missing(name, purpose, e) : e;
  }
}
