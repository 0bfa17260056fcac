// DAP-09 reports for load and fault benchmarks, made fast: the input shares are sealed with
// Veil's node:crypto HPKE primitives (core/ohttp/fast-node.ts via the backend) instead of
// @divviup/dap's WebCrypto path (about 13 ms of CPU per report on this machine against well under
// 1 ms here). The leader double decrypts and checks them like any report; it does no VDAF
// preparation, so the payloads are random bytes of a Prio3Count share's length.
//
// dap-09 §4.4.2:
//   struct { ReportID report_id; Time time; } ReportMetadata;                       // 16 + 8 bytes
//   struct { Extension extensions<0..2^16-1>; opaque payload<0..2^32-1>; } PlaintextInputShare;
//   struct { HpkeConfigId config_id; opaque enc<1..2^16-1>; opaque payload<1..2^32-1>; } HpkeCiphertext;
//   struct { ReportMetadata report_metadata; opaque public_share<0..2^32-1>;
//            HpkeCiphertext leader_encrypted_input_share; HpkeCiphertext helper_encrypted_input_share; } Report;
//   info = "dap-09 input share" || 0x01 || server_role;
//   aad  = task_id || report_metadata || public_share (with its length prefix)

import { randomBytes } from "node:crypto";
import { ByteWriter, toHex } from "../core/bytes.js";
import { hpkeBackend, type AeadId, type KdfId, type KemId } from "../core/ohttp/index.js";
import { inputShareInfo, type DapHpkeConfig } from "../demo/dap-aggregator.js";

export interface DapTaskInfo {
  /** 32-byte task id. */
  id: Uint8Array;
  leaderConfig: DapHpkeConfig;
  helperConfig: DapHpkeConfig;
}

export interface FastReport {
  bytes: Uint8Array;
  /** Hex of the 16-byte report id, as the leader double records it. */
  reportId: string;
}

/** Seals reports for `task`; `timePrecisionSec` rounds the report time down (dap-09 §4.1). */
export async function reportFactory(task: DapTaskInfo, timePrecisionSec = 3600): Promise<(shareLength?: number) => Promise<FastReport>> {
  const backend = await hpkeBackend();
  const seal = async (config: DapHpkeConfig, role: "leader" | "helper") => {
    const suite = backend.suite(config.kemId as KemId, config.kdfId as KdfId, config.aeadId as AeadId);
    const recipientPublicKey = await backend.importPublicKey(config.kemId as KemId, config.publicKey);
    const info = inputShareInfo(role);
    return async (plaintext: Uint8Array, aad: Uint8Array): Promise<Uint8Array> => {
      const { ct, enc } = await suite.seal({ recipientPublicKey, info }, plaintext, aad);
      return new ByteWriter()
        .u8(config.id)
        .u16(enc.byteLength)
        .bytes(new Uint8Array(enc))
        .u32(ct.byteLength)
        .bytes(new Uint8Array(ct))
        .finish()
        .slice();
    };
  };
  const sealLeader = await seal(task.leaderConfig, "leader");
  const sealHelper = await seal(task.helperConfig, "helper");
  return async (shareLength = 48) => {
    const reportId = new Uint8Array(randomBytes(16));
    const time = Math.floor(Date.now() / 1000 / timePrecisionSec) * timePrecisionSec;
    const metadata = new ByteWriter().bytes(reportId).u64(BigInt(time)).finish().slice();
    const publicShare = new Uint8Array(0);
    const aad = new ByteWriter().bytes(task.id).bytes(metadata).u32(publicShare.length).bytes(publicShare).finish().slice();
    const share = (): Uint8Array => new ByteWriter().u16(0).u32(shareLength).bytes(new Uint8Array(randomBytes(shareLength))).finish().slice();
    const leader = await sealLeader(share(), aad);
    const helper = await sealHelper(share(), aad);
    const bytes = new ByteWriter().bytes(metadata).u32(publicShare.length).bytes(publicShare).bytes(leader).bytes(helper).finish().slice();
    return { bytes, reportId: toHex(reportId) };
  };
}
