import { describe, expect, it } from "vitest";
import type { Field } from "../../../core/bhttp/index.js";
import { concatBytes } from "../../../core/bytes.js";
import { encodeUploadRequest, type Dap18Report } from "../../../core/dap/index.js";
import { ProtocolError } from "../../../core/errors.js";
import { checkDapUpload, checkDapUploadBody, checkPolicy, compileTargets, dapTaskIdOf, resolveTarget } from "../../../gateway/policy.js";

const TASK = "x".repeat(42) + "w"; // 43 base64url characters that decode to 32 bytes
const table = compileTargets({
  "https://leader.example": "http://127.0.0.1:8083",
  "https://leader.example/dap/": "http://10.0.0.1:9000/api/",
  "https://helper.example:8443": "https://helper.internal",
  "https://leader18.example": { upstream: "http://127.0.0.1:8093/api/", dap: "18" },
  "https://leader09.example": { upstream: "http://127.0.0.1:8094", dap: "09" },
});

function req(authority: string, path: string, headers: Field[] = [], scheme = "https") {
  return { scheme, authority, path, headers };
}

describe("gateway target allow-list", () => {
  it("maps origins and path prefixes to upstream base paths, longest prefix first", () => {
    const a = resolveTarget(table, req("leader.example", `/tasks/${TASK}/reports`));
    expect([a.entry.upstreamOrigin, a.upstreamPath, a.rest]).toEqual(["http://127.0.0.1:8083", `/tasks/${TASK}/reports`, `tasks/${TASK}/reports`]);
    const b = resolveTarget(table, req("leader.example", `/dap/hpke_config?task_id=${TASK}`));
    expect([b.entry.upstreamOrigin, b.upstreamPath, b.rest, b.query]).toEqual(["http://10.0.0.1:9000", `/api/hpke_config?task_id=${TASK}`, "hpke_config", `task_id=${TASK}`]);
    const c = resolveTarget(table, req("HELPER.example:8443", "/hpke_config"));
    expect([c.innerOrigin, c.upstreamPath]).toEqual(["https://helper.example:8443", "/hpke_config"]);
  });

  it("normalises default ports and takes the authority from Host when :authority is empty", () => {
    expect(resolveTarget(table, req("leader.example:443", "/x")).innerOrigin).toBe("https://leader.example");
    expect(resolveTarget(table, req("", "/x", [["host", "leader.example"]])).entry.name).toBe("https://leader.example");
  });

  it("refuses anything not allow-listed, and paths that could escape a prefix", () => {
    const bad = [
      req("evil.example", "/x"),
      req("leader.example", "/x", [], "http"),
      req("leader.example", "/x", [], "ftp"),
      req("helper.example", "/hpke_config"), // wrong port
      req("leader.example.evil", "/x"),
      req("", "/x"),
      req("user@leader.example", "/x"),
      req("leader.example", "/dap/../admin"),
      req("leader.example", "/dap/%2e%2E/admin"),
      req("leader.example", "*"),
      req("leader.example", "/a#frag"),
      req("leader.example", "/a\\b"),
    ];
    for (const r of bad) expect(() => resolveTarget(table, r), JSON.stringify(r)).toThrow(expect.objectContaining({ code: "GATEWAY_ERR_TARGET_FORBIDDEN" }) as Error);
  });
});

describe("gateway DAP policy", () => {
  const t = (path: string) => resolveTarget(table, req("leader.example", path));

  it("allows DAP-09 PUT uploads and GET hpke_config with or without task_id", () => {
    expect(checkPolicy("dap", "PUT", t(`/tasks/${TASK}/reports`))).toBe("dap-upload");
    expect(checkPolicy("dap", "GET", t("/hpke_config"))).toBe("dap-hpke-config");
    expect(checkPolicy("dap", "GET", t(`/hpke_config?task_id=${TASK}`))).toBe("dap-hpke-config");
    expect(checkPolicy("dap", "PUT", t(`/dap/tasks/${TASK}/reports`))).toBe("dap-upload");
  });

  it("refuses POST uploads (DAP-18's form) on a DAP-09 target, other methods, other paths and odd queries", () => {
    const cases: [string, string][] = [
      ["POST", `/tasks/${TASK}/reports`],
      ["GET", `/tasks/${TASK}/reports`],
      ["PUT", `/tasks/${TASK}/reports?x=1`],
      ["PUT", "/tasks/short/reports"],
      ["PUT", `/tasks/${TASK}/reports/extra`],
      ["POST", "/hpke_config"],
      ["GET", "/hpke_config?task_id=short"],
      ["GET", `/hpke_config?task_id=${TASK}&x=1`],
      ["GET", "/"],
      ["PUT", `/tasks/${TASK}/aggregation_jobs/abc`],
    ];
    for (const [m, p] of cases) expect(() => checkPolicy("dap", m, t(p)), `${m} ${p}`).toThrow(expect.objectContaining({ code: "GATEWAY_ERR_POLICY" }) as Error);
  });

  it("lets everything through under targets-only, still naming DAP routes", () => {
    expect(checkPolicy("targets-only", "DELETE", t("/anything"))).toBe("other");
    expect(checkPolicy("targets-only", "PUT", t(`/tasks/${TASK}/reports`))).toBe("dap-upload");
  });

  it("finds the DAP task id of a path only when it decodes to 32 bytes", () => {
    expect(dapTaskIdOf(`/tasks/${TASK}/reports`)).toBe(TASK);
    expect(dapTaskIdOf(`/api/dap/tasks/${TASK}/reports`)).toBe(TASK);
    expect(dapTaskIdOf(`/hpke_config?task_id=${TASK}`)).toBe(TASK);
    expect(dapTaskIdOf(`/x/hpke_config?task_id=${TASK}`)).toBe(TASK);
    expect(dapTaskIdOf("/hpke_config")).toBeUndefined();
    expect(dapTaskIdOf("/tasks/abc/reports")).toBeUndefined();
    expect(dapTaskIdOf(`/other?task_id=${TASK}`)).toBeUndefined();
  });
});

describe("gateway DAP policy per target: DAP-09 and DAP-18", () => {
  const at = (host: string, path: string) => resolveTarget(table, req(host, path));
  const UPLOAD18 = "application/ppm-dap;message=upload-req";
  const report = (n: number): Dap18Report => ({
    metadata: { reportId: new Uint8Array(16).fill(n), time: 1n, publicExtensions: [] },
    publicShare: new Uint8Array(0),
    leader: { configId: 1, enc: new Uint8Array(32), payload: new Uint8Array(70) },
    helper: { configId: 2, enc: new Uint8Array(32), payload: new Uint8Array(54) },
  });
  const codeOf = (f: () => unknown): string => {
    try {
      f();
      return "ok";
    } catch (e) {
      return e instanceof ProtocolError ? e.code : String(e);
    }
  };

  it("compiles a string target as DAP-09 and an object target with its draft and upstream", () => {
    expect(at("leader.example", "/x").entry.dap).toBe("09");
    expect(at("leader09.example", "/x").entry.dap).toBe("09");
    const t = at("leader18.example", `/tasks/${TASK}/reports`);
    expect([t.entry.dap, t.entry.upstreamOrigin, t.upstreamPath]).toEqual(["18", "http://127.0.0.1:8093", `/api/tasks/${TASK}/reports`]);
  });

  it("admits DAP-18's POST upload and GET hpke_config without a query on a DAP-18 target", () => {
    expect(checkPolicy("dap", "POST", at("leader18.example", `/tasks/${TASK}/reports`))).toBe("dap-upload");
    expect(checkPolicy("dap", "GET", at("leader18.example", "/hpke_config"))).toBe("dap-hpke-config");
    expect(checkPolicy("dap", "PUT", at("leader09.example", `/tasks/${TASK}/reports`))).toBe("dap-upload");
  });

  it("refuses the other draft's forms, naming the draft the target speaks", () => {
    const refused: [string, string, string, RegExp][] = [
      ["leader18.example", "PUT", `/tasks/${TASK}/reports`, /speaks DAP-18/],
      ["leader18.example", "GET", `/hpke_config?task_id=${TASK}`, /speaks DAP-18: hpke_config takes no query/],
      ["leader18.example", "POST", `/tasks/${TASK}/reports?x=1`, /speaks DAP-18/],
      ["leader18.example", "GET", "/", /only DAP-18/],
      ["leader09.example", "POST", `/tasks/${TASK}/reports`, /speaks DAP-09/],
      ["leader.example", "POST", `/tasks/${TASK}/reports`, /speaks DAP-09/],
    ];
    for (const [host, m, p, message] of refused) {
      expect(() => checkPolicy("dap", m, at(host, p)), `${host} ${m} ${p}`).toThrow(expect.objectContaining({ code: "GATEWAY_ERR_POLICY", message: expect.stringMatching(message) as string }) as Error);
    }
  });

  it("checks a DAP-18 upload body whole: media type, framing, reports per token", () => {
    const one = encodeUploadRequest([report(1)]);
    const two = encodeUploadRequest([report(1), report(2)]);
    expect(checkDapUploadBody(UPLOAD18, one, 1)).toBe(1);
    expect(checkDapUploadBody(UPLOAD18, two, 2)).toBe(2);
    expect(checkDapUploadBody(`${UPLOAD18};version=18`, new Uint8Array(0), 1)).toBe(0);
    expect(codeOf(() => checkDapUploadBody(UPLOAD18, two, 1))).toBe("GATEWAY_ERR_TOO_MANY_REPORTS");
    expect(codeOf(() => checkDapUploadBody(UPLOAD18, one.subarray(0, one.length - 1), 1))).toBe("DAP_ERR_TRUNCATED");
    expect(codeOf(() => checkDapUploadBody(UPLOAD18, concatBytes(one, new Uint8Array([0])), 1))).toBe("DAP_ERR_TRUNCATED");
    expect(codeOf(() => checkDapUploadBody("application/dap-report", one, 1))).toBe("HTTP_ERR_MEDIA_TYPE");
    expect(codeOf(() => checkDapUploadBody(undefined, one, 1))).toBe("HTTP_ERR_MEDIA_TYPE");
  });

  it("applies the body check only to DAP-18 uploads under the dap policy", () => {
    const junk = { headers: [["content-type", "application/dap-report"]] as Field[], body: new Uint8Array([1, 2, 3]) };
    const t18 = at("leader18.example", `/tasks/${TASK}/reports`);
    expect(codeOf(() => checkDapUpload("dap", "dap-upload", t18, junk, 1))).toBe("HTTP_ERR_MEDIA_TYPE");
    expect(codeOf(() => checkDapUpload("dap", "dap-upload", t18, { ...junk, headers: [["content-type", UPLOAD18]] }, 1))).toBe("DAP_ERR_TRUNCATED");
    // Two Content-Type fields: no media type.
    const twice = { body: encodeUploadRequest([report(1)]), headers: [["content-type", UPLOAD18], ["content-type", UPLOAD18]] as Field[] };
    expect(codeOf(() => checkDapUpload("dap", "dap-upload", t18, twice, 1))).toBe("HTTP_ERR_MEDIA_TYPE");
    expect(codeOf(() => checkDapUpload("dap", "dap-upload", at("leader09.example", `/tasks/${TASK}/reports`), junk, 1))).toBe("ok");
    expect(codeOf(() => checkDapUpload("dap", "dap-hpke-config", at("leader18.example", "/hpke_config"), junk, 1))).toBe("ok");
    expect(codeOf(() => checkDapUpload("targets-only", "dap-upload", t18, junk, 1))).toBe("ok");
  });

  it("reads the task id of DAP-18 paths in the same place", () => {
    expect(dapTaskIdOf(`/api/tasks/${TASK}/reports`)).toBe(TASK);
    expect(dapTaskIdOf("/hpke_config")).toBeUndefined();
  });
});
