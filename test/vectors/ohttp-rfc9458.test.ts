// RFC 9458 Appendix A, byte for byte, in both directions and on both HPKE backends (node:crypto
// primitives and stock hpke-js). The vector (test/vectors/ohttp-rfc9458.json) is a copy of the
// team's checked set; its `derived` values are computed from the RFC's, not printed in it.

import { describe, expect, it } from "vitest";
import { fromHex, toHex } from "../../core/bytes.js";
import {
  AEAD,
  KDF,
  KEM,
  decapsulateRequest,
  decodeKeyConfig,
  decodeKeyConfigs,
  encapsulateRequest,
  encodeKeyConfig,
  encodeKeyConfigs,
  importGatewayKey,
} from "../../core/ohttp/index.js";
import { NodeHkdf, aeadOpen, aeadSeal } from "../../core/ohttp/fast-node.js";
import { A, A_PRIVATE_KEY, A_SYMMETRIC, BACKENDS, RFC9458, inSubarray } from "../helpers/ohttp.js";

const D = RFC9458.derived;

describe("RFC 9458 Appendix A key configuration", () => {
  it("decodes the printed Key Config", () => {
    const c = decodeKeyConfig(fromHex(A.key_config));
    expect(c).toEqual({ keyId: 1, kemId: KEM.X25519, publicKey: fromHex(A.gateway_key.public_key), symmetric: A_SYMMETRIC });
  });

  it("encodes the Key Config byte for byte", () => {
    const c = { keyId: 1, kemId: KEM.X25519, publicKey: fromHex(A.gateway_key.public_key), symmetric: A_SYMMETRIC };
    expect(toHex(encodeKeyConfig(c))).toBe(A.key_config);
  });

  it("encodes and decodes the application/ohttp-keys form with its 2-byte length prefix", () => {
    const c = decodeKeyConfig(fromHex(A.key_config));
    expect(toHex(encodeKeyConfigs([c]))).toBe(D.ohttp_keys);
    expect(decodeKeyConfigs(fromHex(D.ohttp_keys))).toEqual([c]);
    expect(decodeKeyConfigs(inSubarray(fromHex(D.ohttp_keys)))).toEqual([c]);
  });
});

describe.each(BACKENDS.map((b) => [b.name, b] as const))("RFC 9458 Appendix A exchange (%s)", (_name, backend) => {
  it("derives the printed public key from the gateway's private key", async () => {
    const key = await importGatewayKey(1, KEM.X25519, A_PRIVATE_KEY, A_SYMMETRIC, { backend });
    expect(toHex(key.config.publicKey)).toBe(A.gateway_key.public_key);
    expect(toHex(encodeKeyConfig(key.config))).toBe(A.key_config);
  });

  it("client: encapsulates the request byte for byte from the printed ephemeral key", async () => {
    const config = decodeKeyConfig(fromHex(A.key_config));
    const { encapsulated } = await encapsulateRequest(config, fromHex(A.request), {
      kdfId: KDF.SHA256,
      aeadId: AEAD.AES128GCM,
      ephemeral: { privateKey: fromHex(A.client_ephemeral_private_key) },
      backend,
    });
    expect(toHex(encapsulated)).toBe(A.encapsulated_request);
    expect(toHex(encapsulated.subarray(0, 7))).toBe(D.request_header);
    expect(toHex(encapsulated.subarray(7, 39))).toBe(A.client_ephemeral_public_key);
  });

  it("gateway: decapsulates the request and encapsulates the response byte for byte", async () => {
    const key = await importGatewayKey(1, KEM.X25519, A_PRIVATE_KEY, A_SYMMETRIC, { backend });
    const { request, keyId, response } = await decapsulateRequest(new Map([[1, key]]), inSubarray(fromHex(A.encapsulated_request)));
    expect(keyId).toBe(1);
    expect(toHex(request)).toBe(A.request);
    const encResponse = await response.encapsulateResponse(fromHex(A.response), { responseNonce: fromHex(D.response_nonce) });
    expect(toHex(encResponse)).toBe(A.encapsulated_response);
  });

  it("gateway: takes the response nonce from injected randomness", async () => {
    const key = await importGatewayKey(1, KEM.X25519, A_PRIVATE_KEY, A_SYMMETRIC, { backend });
    const randomBytes = (n: number): Uint8Array => {
      expect(n).toBe(16);
      return fromHex(D.response_nonce);
    };
    const { response } = await decapsulateRequest(new Map([[1, key]]), fromHex(A.encapsulated_request), { randomBytes });
    expect(toHex(await response.encapsulateResponse(fromHex(A.response)))).toBe(A.encapsulated_response);
  });

  it("client: decapsulates the printed response", async () => {
    const config = decodeKeyConfig(fromHex(A.key_config));
    const { response } = await encapsulateRequest(config, fromHex(A.request), {
      ephemeral: { privateKey: fromHex(A.client_ephemeral_private_key) },
      backend,
    });
    expect(toHex(await response.decapsulateResponse(inSubarray(fromHex(A.encapsulated_response))))).toBe(A.response);
  });
});

describe("RFC 9458 Appendix A intermediate values through the node:crypto primitives", () => {
  const kdf = new NodeHkdf(KDF.SHA256);

  it("derives the response key and nonce (§4.4) from the exported secret", () => {
    const salt = fromHex(A.response_salt);
    expect(toHex(salt)).toBe(A.client_ephemeral_public_key + D.response_nonce);
    const prk = kdf.extractSync(salt, fromHex(A.response_secret));
    expect(toHex(prk)).toBe(A.response_prk);
    const key = kdf.expandSync(prk, new TextEncoder().encode("key"), 16);
    const nonce = kdf.expandSync(prk, new TextEncoder().encode("nonce"), 12);
    expect(toHex(key)).toBe(A.response_aead_key);
    expect(toHex(nonce)).toBe(A.response_aead_nonce);
    const ct = aeadSeal(AEAD.AES128GCM, key, nonce, fromHex(A.response), new Uint8Array(0));
    expect(D.response_nonce + toHex(ct)).toBe(A.encapsulated_response);
    expect(toHex(aeadOpen(AEAD.AES128GCM, key, nonce, ct, new Uint8Array(0)))).toBe(A.response);
  });

  it("builds the HPKE info string", () => {
    const info = new Uint8Array([...new TextEncoder().encode("message/bhttp request"), 0, ...fromHex(D.request_header)]);
    expect(toHex(info)).toBe(A.hpke_info);
  });
});
