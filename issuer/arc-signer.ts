// The issuer's ARC operation (draft-ietf-privacypass-arc-protocol-01 §6.2): CredentialRequest ->
// CredentialResponse with the ARC(P-256) private key of one key-file entry.

import { ProtocolError } from "../core/errors.js";
import { ARC_TOKEN_TYPE } from "../core/privacypass/token-type.js";
import {
  createCredentialResponse,
  decodeServerPrivateKey,
  encodeArcCredentialResponse,
  encodeServerPublicKey,
  issuerKeyId,
  publicKeyFromPrivate,
  type CredentialRequest,
} from "../core/privacypass/arc/index.js";

export interface ArcSigner {
  readonly tokenType: typeof ARC_TOKEN_TYPE;
  /** SerializeServerPublicKey(pkI) (99 bytes), published as `token-key`. */
  readonly tokenKey: Uint8Array;
  /** issuer_key_id = SHA-256(token-key). */
  readonly tokenKeyId: Uint8Array;
  /** CreateCredentialResponse: throws ISSUER_ERR_REQUEST (422) when the request proof does not verify. */
  respond(request: CredentialRequest): Uint8Array;
}

/** An ARC signer from x0 || x1 || x2 || x0Blinding (4 x 32 bytes). */
export function createArcSigner(privateKey: Uint8Array): ArcSigner {
  let sk;
  try {
    sk = decodeServerPrivateKey(privateKey);
  } catch (e) {
    throw new ProtocolError("CFG_ERR_KEY_FILE", "ARC key is not four valid P-256 scalars", { cause: e });
  }
  const pk = publicKeyFromPrivate(sk);
  const tokenKey = encodeServerPublicKey(pk);
  return {
    tokenType: ARC_TOKEN_TYPE,
    tokenKey,
    tokenKeyId: issuerKeyId(tokenKey),
    respond(request) {
      try {
        return encodeArcCredentialResponse(createCredentialResponse(sk, pk, request));
      } catch (e) {
        if (e instanceof ProtocolError && e.code === "PP_ERR_FORMAT") {
          throw new ProtocolError("ISSUER_ERR_REQUEST", "credential request proof does not verify", { cause: e });
        }
        throw e;
      }
    },
  };
}
