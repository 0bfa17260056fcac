import { describe, expect, it } from "vitest";
import type { Field } from "../../../core/bhttp/index.js";
import { checkPolicy, compileTargets, dapTaskIdOf, resolveTarget } from "../../../gateway/policy.js";

const TASK = "x".repeat(42) + "w"; // 43 base64url characters that decode to 32 bytes
const table = compileTargets({
  "https://leader.example": "http://127.0.0.1:8083",
  "https://leader.example/dap/": "http://10.0.0.1:9000/api/",
  "https://helper.example:8443": "https://helper.internal",
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

  it("refuses POST uploads, other methods, other paths and odd queries", () => {
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
