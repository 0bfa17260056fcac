// Loads the Privacy Pass vectors checked in under test/vectors/privacypass (its README names their sources) with field
// names normalised (the Rust files use snake_case).
import { readFileSync } from "node:fs";
import { fromHex } from "../../core/bytes.js";

export const PP_VECTOR_DIR = process.env.VEIL_VECTORS ?? new URL("../vectors/privacypass", import.meta.url).pathname;

export interface IssuanceVector {
  file: string;
  index: number;
  skS: Uint8Array;
  pkS: Uint8Array;
  tokenChallenge: Uint8Array;
  nonce: Uint8Array;
  blind: Uint8Array;
  tokenRequest: Uint8Array;
  tokenResponse: Uint8Array;
  token: Uint8Array;
}

function load(file: string): Record<string, unknown>[] {
  return JSON.parse(readFileSync(`${PP_VECTOR_DIR}/${file}`, "utf8")) as Record<string, unknown>[];
}

function hex(v: Record<string, unknown>, ...names: string[]): Uint8Array {
  for (const n of names) {
    const x = v[n];
    if (typeof x === "string") return fromHex(x);
  }
  throw new Error(`vector field ${names.join("/")} missing`);
}

function issuance(files: string[]): IssuanceVector[] {
  return files.flatMap((file) =>
    load(file).map((v, index) => ({
      file,
      index,
      skS: hex(v, "skS", "sk_s"),
      pkS: hex(v, "pkS", "pk_s"),
      tokenChallenge: hex(v, "token_challenge"),
      nonce: hex(v, "nonce"),
      blind: hex(v, "blind"),
      tokenRequest: hex(v, "token_request"),
      tokenResponse: hex(v, "token_response"),
      token: hex(v, "token"),
    })),
  );
}

export const TYPE2_VECTORS: IssuanceVector[] = issuance([
  "privacypass-ts/pub_verif_rfc9578.go.json",
  "privacypass-ts/pub_verif_rfc9578.rust.json",
  "pat-go/type2-issuance-test-vectors.json",
  "raphaelrobert-privacypass/public_rs.json",
]);

export const TYPE1_VECTORS: IssuanceVector[] = issuance([
  "privacypass-ts/priv_verif_rfc9578.go.json",
  "privacypass-ts/priv_verif_rfc9578.rust.json",
  "pat-go/type1-issuance-test-vectors.json",
  "raphaelrobert-privacypass/private_p384_rs.json",
]);

export interface TokenVector {
  tokenType: number;
  issuerName: string;
  redemptionContext: Uint8Array;
  originInfo: string;
  nonce: Uint8Array;
  tokenKeyId: Uint8Array;
  authenticatorInput: Uint8Array;
}

export const TOKEN_VECTORS: TokenVector[] = load("privacypass-ts/auth_scheme_token_v14.json").map((v) => ({
  tokenType: parseInt(String(v.token_type), 16),
  issuerName: new TextDecoder().decode(hex(v, "issuer_name")),
  redemptionContext: hex(v, "redemption_context"),
  originInfo: new TextDecoder().decode(hex(v, "origin_info")),
  nonce: hex(v, "nonce"),
  tokenKeyId: hex(v, "token_key_id"),
  authenticatorInput: hex(v, "token_authenticator_input"),
}));

export interface HeaderVector {
  header: string;
  challenges: { tokenType: number; tokenKey: Uint8Array; maxAge: number; challenge: Uint8Array }[];
}

export const HEADER_VECTORS: HeaderVector[] = [
  "privacypass-ts/auth_scheme_header_v14.json",
  "privacypass-ts/auth_scheme_header_complicated.json",
].flatMap((file) =>
  load(file).map((v) => {
    const challenges: HeaderVector["challenges"] = [];
    for (let i = 0; `token-type-${i}` in v; i++) {
      challenges.push({
        tokenType: Number(v[`token-type-${i}`]),
        tokenKey: hex(v, `token-key-${i}`),
        maxAge: Number(v[`max-age-${i}`]),
        challenge: hex(v, `token-challenge-${i}`),
      });
    }
    return { header: String(v["WWW-Authenticate"]), challenges };
  }),
);

/** A copy of `b` placed at an odd offset inside a larger buffer, with junk on both sides. */
export function inSubarray(b: Uint8Array): Uint8Array {
  const big = new Uint8Array(b.length + 11).fill(0xa5);
  big.set(b, 5);
  return big.subarray(5, 5 + b.length);
}
