// Child process of bench/faults.ts and bench/soak.ts (forked by bench/stack.ts forkLeader): the
// DAP-09 leader double behind the fault proxy, in a process of its own so that its HPKE work (stock
// hpke-js on WebCrypto, several ms per report) runs on the other core.
//
// IPC: sends {type: "ready", url, task} once listening; then answers
//   {type: "faults", rates}  fault probabilities per request (the rest passes)
//   {type: "refuse", ms}     the proxy refuses connections for ms
//   {type: "sample"}        -> {type: "sampled", eldP99Ms, rss}
//   {type: "report"}        -> {type: "reported", accepted, duplicates, rejections, faults}
//   {type: "stop"}           closes everything and exits.

import { monitorEventLoopDelay } from "node:perf_hooks";
import { toHex } from "../core/bytes.js";
import { createDapTask, startDapAggregator } from "../demo/dap-aggregator.js";
import { FAULT_MODES, startFaultProxy, type FaultMode } from "./fault-proxy.js";

const task = await createDapTask();
// The leader holds no helper key here, so it opens only its own share (half the HPKE work); the
// reports still carry a real helper share sealed to the helper's key.
const leader = await startDapAggregator({ role: "leader", tasks: [{ ...task, helperKeys: [] }], maxRecorded: 100 });
let rates: Partial<Record<FaultMode, number>> = {};
const proxy = await startFaultProxy({
  target: leader.url,
  choose: () => {
    let r = Math.random();
    for (const mode of FAULT_MODES) {
      const p = rates[mode] ?? 0;
      if (mode !== "pass" && r < p) return mode;
      if (mode !== "pass") r -= p;
    }
    return "pass";
  },
});
const eld = monitorEventLoopDelay({ resolution: 10 });
eld.enable();

const hpke = (k: (typeof task.leaderKeys)[number]) => ({ ...k.config, publicKey: toHex(k.config.publicKey) });
process.send?.({
  type: "ready",
  url: proxy.url,
  task: { id: toHex(task.id), idBase64Url: task.idBase64Url, leaderConfig: hpke(task.leaderKeys[0]!), helperConfig: hpke(task.helperKeys[0]!) },
});

process.on("message", (m: { type: string; rates?: Partial<Record<FaultMode, number>>; ms?: number }) => {
  switch (m.type) {
    case "faults":
      rates = m.rates ?? {};
      break;
    case "refuse":
      void proxy.refuse(m.ms ?? 100);
      break;
    case "sample": {
      const p99 = eld.percentile(99) / 1e6;
      eld.reset();
      process.send?.({ type: "sampled", eldP99Ms: p99, rss: process.memoryUsage.rss() });
      break;
    }
    case "report": {
      const accepted = (leader.reports.get(task.idBase64Url) ?? []).map((r) => r.reportId);
      process.send?.({
        type: "reported",
        accepted,
        duplicates: leader.duplicates.length,
        rejections: Object.fromEntries(leader.rejections),
        faults: { ...proxy.counts },
      });
      break;
    }
    case "stop":
      void (async () => {
        await proxy.close();
        await leader.close();
        process.exit(0);
      })();
      break;
  }
});
process.on("disconnect", () => process.exit(0));
