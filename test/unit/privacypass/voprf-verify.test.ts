// Type 1 verification accepts exactly the canonical authenticator: Finalize over the compressed
// encoding of skI * HashToGroup(input) with the right y parity (RFC 9497 SerializeElement), never
// the one over the other encoding, which anyone holding a valid token could compute.

import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { encodeAuthenticatorInput, type Token } from "../../../core/privacypass/token.js";
import { TOKEN_TYPE } from "../../../core/privacypass/token-type.js";
import { importVoprfPrivateKey, verifyToken } from "../../../core/privacypass/verify-node.js";
import {
  deriveKeyPair,
  deserializeScalar,
  finalizeHash,
  hashToGroup,
  serializeElement,
  verifyVoprfAuthenticator as verifyPureJs,
} from "../../../core/privacypass/voprf.js";

const { skS } = deriveKeyPair(new Uint8Array(randomBytes(32)));
const key = importVoprfPrivateKey(skS);

function tokenFor(authenticator: Uint8Array, nonce: Uint8Array): Token {
  return { tokenType: TOKEN_TYPE.VOPRF_P384, nonce, challengeDigest: new Uint8Array(32).fill(7), tokenKeyId: key.tokenKeyId, authenticator };
}

/** Both candidate authenticators of a token: over skI * P (canonical) and over -(skI * P). */
function authenticators(nonce: Uint8Array): { canonical: Uint8Array; other: Uint8Array; input: Uint8Array } {
  const input = encodeAuthenticatorInput(tokenFor(new Uint8Array(48), nonce));
  const Q = hashToGroup(input).multiply(deserializeScalar(skS));
  return { canonical: finalizeHash(input, serializeElement(Q)), other: finalizeHash(input, serializeElement(Q.negate())), input };
}

describe("type 1 authenticator", () => {
  it("accepts the canonical encoding and refuses the other one, whichever parity y has", () => {
    const parities = new Set<number>();
    for (let i = 0; i < 24; i++) {
      const nonce = new Uint8Array(randomBytes(32));
      const { canonical, other, input } = authenticators(nonce);
      const Q = hashToGroup(input).multiply(deserializeScalar(skS));
      parities.add(serializeElement(Q)[0]!);
      expect(verifyToken(tokenFor(canonical, nonce), key)).toBe(true);
      expect(verifyToken(tokenFor(other, nonce), key)).toBe(false);
      // The pure-JS path (browsers, the vectors) agrees.
      expect(verifyPureJs(skS, input, canonical)).toBe(true);
      expect(verifyPureJs(skS, input, other)).toBe(false);
    }
    // Both parities were exercised (each has probability 1/2 per nonce).
    expect([...parities].sort()).toEqual([0x02, 0x03]);
  });

  it("refuses an authenticator that matches neither encoding", () => {
    const nonce = new Uint8Array(randomBytes(32));
    const { canonical } = authenticators(nonce);
    const forged = canonical.slice();
    forged[0]! ^= 1;
    expect(verifyToken(tokenFor(forged, nonce), key)).toBe(false);
    expect(verifyToken(tokenFor(canonical.subarray(0, 47), nonce), key)).toBe(false);
  });
});
