import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { Prio3Aggregation, makePrio3, type DemoVdaf } from "../../../demo/prio3-aggregate.js";

interface Sharder {
  randSize: number;
  shardEncoded(m: unknown, nonce: Buffer, rand: Buffer): Promise<{ publicShare: Buffer; inputShares: Buffer[] }>;
}

async function report(spec: DemoVdaf, measurement: unknown) {
  const v = makePrio3(spec) as unknown as Sharder;
  const reportId = randomBytes(16);
  const { publicShare, inputShares } = await v.shardEncoded(measurement, reportId, randomBytes(v.randSize));
  return { reportId, publicShare, leaderShare: inputShares[0]!, helperShare: inputShares[1]! };
}

describe("the demo's Prio3 aggregation of both aggregators' shares", () => {
  it("counts Prio3Count reports as the collector would", async () => {
    const agg = new Prio3Aggregation({ vdaf: "count" });
    for (const m of [true, false, true, true]) expect(await agg.add(await report({ vdaf: "count" }, m))).toBe(true);
    expect(agg.result()).toBe(3);
    expect(agg.valid).toBe(4);
  });

  it("sums Prio3Sum and buckets Prio3Histogram reports (joint randomness)", async () => {
    const sum = new Prio3Aggregation({ vdaf: "sum", bits: 8 });
    for (const m of [1, 17, 200]) await sum.add(await report({ vdaf: "sum", bits: 8 }, m));
    expect(Number(sum.result())).toBe(218);
    const spec = { vdaf: "histogram", length: 4, chunkLength: 2 } as const;
    const h = new Prio3Aggregation(spec);
    for (const m of [0, 3, 3, 1]) await h.add(await report(spec, m));
    expect((h.result() as unknown[]).map(Number)).toEqual([1, 1, 0, 2]);
  });

  it("leaves out a report whose shares were tampered with, and one that does not decode", async () => {
    const agg = new Prio3Aggregation({ vdaf: "count" });
    const r = await report({ vdaf: "count" }, true);
    const leaderShare = Buffer.from(r.leaderShare);
    leaderShare[0]! ^= 1;
    expect(await agg.add({ ...r, leaderShare })).toBe(false);
    expect(await agg.add({ ...r, helperShare: r.helperShare.subarray(1) })).toBe(false);
    expect(agg.invalid).toBe(2);
    expect(agg.result()).toBeUndefined();
  });
});
