// bench/dap-reports.ts makes reports the DAP-09 leader double accepts (it decrypts both shares).

import { describe, expect, it } from "vitest";
import { reportFactory } from "../../../bench/dap-reports.js";
import { createDapTask, startDapAggregator } from "../../../demo/dap-aggregator.js";

describe("fast DAP-09 reports for benchmarks", () => {
  it("are accepted by the leader double, which decrypts the leader's and the helper's share", async () => {
    const task = await createDapTask();
    const leader = await startDapAggregator({ role: "leader", tasks: [task], leaderShareLength: 48 });
    try {
      const make = await reportFactory({ id: task.id, leaderConfig: task.leaderKeys[0]!.config, helperConfig: task.helperKeys[0]!.config });
      const reports = await Promise.all([make(), make(), make()]);
      for (const r of reports) {
        const res = await fetch(new URL(`tasks/${task.idBase64Url}/reports`, leader.url), { method: "PUT", headers: { "content-type": "application/dap-report" }, body: new Uint8Array(r.bytes) });
        expect(res.status).toBe(201);
      }
      const accepted = leader.reports.get(task.idBase64Url)!;
      expect(accepted.map((a) => a.reportId)).toEqual(reports.map((r) => r.reportId));
      expect(accepted.every((a) => a.helperShare?.length === 48)).toBe(true);
    } finally {
      await leader.close();
    }
  });
});
