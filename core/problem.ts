// RFC 9457 problem details, built only from Veil's error catalogue.
//
// A foreign error's message never reaches a client: anything that is not a ProtocolError becomes
// INTERNAL_ERR with the generic title.

import { ERRORS, wrapError, type ErrorCode } from "./errors.js";

export const PROBLEM_MEDIA_TYPE = "application/problem+json";

/** RFC 9457 §3 members, plus `code` (Veil's stable code) and `taskid` (DAP-09 §3.2). */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail?: string;
  code: ErrorCode;
  /** DAP task id, unpadded base64url: DAP clients (@divviup/dap) require it on DAP paths. */
  taskid?: string;
}

export interface ProblemOptions {
  taskId?: string | undefined;
}

export function toProblem(e: unknown, options: ProblemOptions = {}): Problem {
  const err = wrapError(e);
  const spec = ERRORS[err.code];
  const problem: Problem = { type: spec.type, title: spec.title, status: spec.status, code: err.code };
  // INTERNAL_ERR's detail could describe internals: only the generic title goes out.
  if (err.code !== "INTERNAL_ERR" && err.message !== spec.title) problem.detail = err.message;
  if (options.taskId !== undefined) problem.taskid = options.taskId;
  return problem;
}

export function encodeProblem(problem: Problem): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(problem));
}
