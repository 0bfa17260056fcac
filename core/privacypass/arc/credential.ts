// ARC key generation and credential issuance (draft-ietf-privacypass-arc-crypto-01 §4.1, §4.2 and
// the proofs of §5.1, §5.2), suite ARCV1-P256.

import { concatBytes } from "../../bytes.js";
import { ProtocolError } from "../../errors.js";
import {
  Ne,
  Ns,
  Point,
  arcReader,
  defaultScalarRng,
  generatorG,
  generatorH,
  hashToScalar,
  mod,
  readElements,
  readScalars,
  serializeElement,
  sessionId,
  serializeScalar,
  type ScalarRng,
} from "./group.js";
import { LinearRelation, prove, verify } from "./sigma.js";

const te = new TextEncoder();
const REQUEST_SESSION = sessionId("CredentialRequest");
const RESPONSE_SESSION = sessionId("CredentialResponse");
const REQUEST_CONTEXT_INFO = te.encode("requestContext");

export interface ServerPrivateKey {
  readonly x0: bigint;
  readonly x1: bigint;
  readonly x2: bigint;
  readonly x0Blinding: bigint;
}

export interface ServerPublicKey {
  readonly X0: Point;
  readonly X1: Point;
  readonly X2: Point;
}

/** NserverPublicKey = 3*Ne. */
export const SERVER_PUBLIC_KEY_LENGTH = 3 * Ne;
/** Veil's private key encoding (the draft defines none): x0 || x1 || x2 || x0Blinding. */
export const SERVER_PRIVATE_KEY_LENGTH = 4 * Ns;
/** Nrequest = 2*Ne + 5*Ns. */
export const CREDENTIAL_REQUEST_LENGTH = 2 * Ne + 5 * Ns;
/** Nresponse = 6*Ne + 8*Ns. */
export const CREDENTIAL_RESPONSE_LENGTH = 6 * Ne + 8 * Ns;

/** SetupServer(). */
export function setupServer(rng: ScalarRng = defaultScalarRng): { privateKey: ServerPrivateKey; publicKey: ServerPublicKey } {
  const x0 = rng.randomScalar();
  const x1 = rng.randomScalar();
  const x2 = rng.randomScalar();
  const x0Blinding = rng.randomScalar();
  const privateKey = { x0, x1, x2, x0Blinding };
  return { privateKey, publicKey: publicKeyFromPrivate(privateKey) };
}

/** X0 = x0*G + x0Blinding*H, X1 = x1*H, X2 = x2*H. */
export function publicKeyFromPrivate(k: ServerPrivateKey): ServerPublicKey {
  return {
    X0: generatorG.multiply(k.x0).add(generatorH.multiply(k.x0Blinding)),
    X1: generatorH.multiply(k.x1),
    X2: generatorH.multiply(k.x2),
  };
}

//   struct { uint8 X0[Ne]; uint8 X1[Ne]; uint8 X2[Ne]; } ServerPublicKey;
export function encodeServerPublicKey(k: ServerPublicKey): Uint8Array {
  return concatBytes(serializeElement(k.X0), serializeElement(k.X1), serializeElement(k.X2));
}

export function decodeServerPublicKey(b: Uint8Array): ServerPublicKey {
  const r = arcReader(b);
  const key = readElements(r, ["X0", "X1", "X2"]);
  r.end("ServerPublicKey");
  return key;
}

export function encodeServerPrivateKey(k: ServerPrivateKey): Uint8Array {
  return concatBytes(serializeScalar(k.x0), serializeScalar(k.x1), serializeScalar(k.x2), serializeScalar(k.x0Blinding));
}

export function decodeServerPrivateKey(b: Uint8Array): ServerPrivateKey {
  const r = arcReader(b);
  const key = readScalars(r, ["x0", "x1", "x2", "x0Blinding"]);
  r.end("ServerPrivateKey");
  return key;
}

export interface ClientSecrets {
  readonly m1: bigint;
  readonly m2: bigint;
  readonly r1: bigint;
  readonly r2: bigint;
}

export interface CredentialRequest {
  readonly m1Enc: Point;
  readonly m2Enc: Point;
  /** challenge || 4 responses (5*Ns bytes). */
  readonly requestProof: Uint8Array;
}

export interface CredentialResponse {
  readonly U: Point;
  readonly encUPrime: Point;
  readonly X0Aux: Point;
  readonly X1Aux: Point;
  readonly X2Aux: Point;
  readonly HAux: Point;
  /** challenge || 7 responses (8*Ns bytes). */
  readonly responseProof: Uint8Array;
}

export interface Credential {
  readonly m1: bigint;
  readonly U: Point;
  readonly UPrime: Point;
  readonly X1: Point;
}

/** m2 = HashToScalar(requestContext, "requestContext"). */
export function requestContextScalar(requestContext: Uint8Array): bigint {
  return hashToScalar(requestContext, REQUEST_CONTEXT_INFO);
}

function requestRelation(m1Enc: Point, m2Enc: Point): LinearRelation {
  const st = new LinearRelation();
  const [m1, m2, r1, r2] = st.allocateScalars(4) as [number, number, number, number];
  const [genG, genH, m1EncVar, m2EncVar] = st.addElements([generatorG, generatorH, m1Enc, m2Enc]) as [number, number, number, number];
  // 1. m1Enc = m1 * generatorG + r1 * generatorH
  st.appendEquation(m1EncVar, [
    [m1, genG],
    [r1, genH],
  ]);
  // 2. m2Enc = m2 * generatorG + r2 * generatorH
  st.appendEquation(m2EncVar, [
    [m2, genG],
    [r2, genH],
  ]);
  return st;
}

/** CreateCredentialRequest(requestContext). */
export function createCredentialRequest(
  requestContext: Uint8Array,
  rng: ScalarRng = defaultScalarRng,
): { clientSecrets: ClientSecrets; request: CredentialRequest } {
  const m1 = rng.randomScalar();
  const m2 = requestContextScalar(requestContext);
  const r1 = rng.randomScalar();
  const r2 = rng.randomScalar();
  const m1Enc = generatorG.multiply(m1).add(generatorH.multiply(r1));
  const m2Enc = generatorG.multiply(m2).add(generatorH.multiply(r2));
  const requestProof = prove(requestRelation(m1Enc, m2Enc), REQUEST_SESSION, [m1, m2, r1, r2], rng);
  return { clientSecrets: { m1, m2, r1, r2 }, request: { m1Enc, m2Enc, requestProof } };
}

/** VerifyCredentialRequestProof(request). */
export function verifyCredentialRequestProof(request: CredentialRequest): boolean {
  return verify(requestRelation(request.m1Enc, request.m2Enc), REQUEST_SESSION, request.requestProof);
}

//   struct { uint8 m1Enc[Ne]; uint8 m2Enc[Ne]; uint8 requestProof[5*Ns]; } CredentialRequest;
export function encodeCredentialRequest(r: CredentialRequest): Uint8Array {
  if (r.requestProof.length !== 5 * Ns) throw new ProtocolError("PP_ERR_FORMAT", "requestProof must be 5*Ns bytes");
  return concatBytes(serializeElement(r.m1Enc), serializeElement(r.m2Enc), r.requestProof);
}

export function decodeCredentialRequest(b: Uint8Array): CredentialRequest {
  const r = arcReader(b);
  const { m1Enc, m2Enc } = readElements(r, ["m1Enc", "m2Enc"]);
  const requestProof = r.bytes(5 * Ns, "requestProof").slice();
  r.end("CredentialRequest");
  return { m1Enc, m2Enc, requestProof };
}

interface ResponseElements extends Omit<CredentialResponse, "responseProof"> {
  readonly request: CredentialRequest;
  readonly publicKey: ServerPublicKey;
}

function responseRelation(v: ResponseElements): LinearRelation {
  const st = new LinearRelation();
  const [x0, x1, x2, x0Blinding, b, t1, t2] = st.allocateScalars(7) as [number, number, number, number, number, number, number];
  const [genG, genH, m1Enc, m2Enc, U, encUPrime, X0, X1, X2, X0Aux, X1Aux, X2Aux, HAux] = st.addElements([
    generatorG, generatorH, v.request.m1Enc, v.request.m2Enc, v.U, v.encUPrime,
    v.publicKey.X0, v.publicKey.X1, v.publicKey.X2, v.X0Aux, v.X1Aux, v.X2Aux, v.HAux,
  ]) as [number, number, number, number, number, number, number, number, number, number, number, number, number];
  // 1. X0 = x0 * generatorG + x0Blinding * generatorH
  st.appendEquation(X0, [[x0, genG], [x0Blinding, genH]]);
  // 2. X1 = x1 * generatorH
  st.appendEquation(X1, [[x1, genH]]);
  // 3. X2 = x2 * generatorH
  st.appendEquation(X2, [[x2, genH]]);
  // 4a. HAux = b * generatorH
  st.appendEquation(HAux, [[b, genH]]);
  // 4b. X0Aux = x0Blinding * HAux
  st.appendEquation(X0Aux, [[x0Blinding, HAux]]);
  // 5a. X1Aux = t1 * generatorH (t1 = b * x1)
  st.appendEquation(X1Aux, [[t1, genH]]);
  // 5b. X1Aux = b * X1
  st.appendEquation(X1Aux, [[b, X1]]);
  // 6a. X2Aux = b * X2
  st.appendEquation(X2Aux, [[b, X2]]);
  // 6b. X2Aux = t2 * generatorH (t2 = b * x2)
  st.appendEquation(X2Aux, [[t2, genH]]);
  // 7. U = b * generatorG
  st.appendEquation(U, [[b, genG]]);
  // 8. encUPrime = b * X0 + t1 * m1Enc + t2 * m2Enc
  st.appendEquation(encUPrime, [[b, X0], [t1, m1Enc], [t2, m2Enc]]);
  return st;
}

/**
 * CreateCredentialResponse(serverPrivateKey, serverPublicKey, request). Throws PP_ERR_FORMAT
 * (VerifyError) when the request proof does not verify.
 */
export function createCredentialResponse(
  privateKey: ServerPrivateKey,
  publicKey: ServerPublicKey,
  request: CredentialRequest,
  rng: ScalarRng = defaultScalarRng,
): CredentialResponse {
  if (!verifyCredentialRequestProof(request)) throw new ProtocolError("PP_ERR_FORMAT", "credential request proof does not verify");
  const b = rng.randomScalar();
  const U = generatorG.multiply(b);
  const encUPrime = publicKey.X0.add(request.m1Enc.multiply(privateKey.x1)).add(request.m2Enc.multiply(privateKey.x2)).multiply(b);
  const X0Aux = generatorH.multiply(mod(b * privateKey.x0Blinding));
  const X1Aux = publicKey.X1.multiply(b);
  const X2Aux = publicKey.X2.multiply(b);
  const HAux = generatorH.multiply(b);
  const elements = { request, publicKey, U, encUPrime, X0Aux, X1Aux, X2Aux, HAux };
  const witness = [privateKey.x0, privateKey.x1, privateKey.x2, privateKey.x0Blinding, b, mod(b * privateKey.x1), mod(b * privateKey.x2)];
  const responseProof = prove(responseRelation(elements), RESPONSE_SESSION, witness, rng);
  return { U, encUPrime, X0Aux, X1Aux, X2Aux, HAux, responseProof };
}

/** VerifyCredentialResponseProof(serverPublicKey, response, request). */
export function verifyCredentialResponseProof(publicKey: ServerPublicKey, response: CredentialResponse, request: CredentialRequest): boolean {
  return verify(responseRelation({ ...response, request, publicKey }), RESPONSE_SESSION, response.responseProof);
}

//   struct { uint8 U[Ne]; uint8 encUPrime[Ne]; uint8 X0Aux[Ne]; uint8 X1Aux[Ne]; uint8 X2Aux[Ne];
//            uint8 HAux[Ne]; uint8 responseProof[8*Ns]; } CredentialResponse;
export function encodeCredentialResponse(r: CredentialResponse): Uint8Array {
  if (r.responseProof.length !== 8 * Ns) throw new ProtocolError("PP_ERR_FORMAT", "responseProof must be 8*Ns bytes");
  return concatBytes(
    serializeElement(r.U),
    serializeElement(r.encUPrime),
    serializeElement(r.X0Aux),
    serializeElement(r.X1Aux),
    serializeElement(r.X2Aux),
    serializeElement(r.HAux),
    r.responseProof,
  );
}

export function decodeCredentialResponse(b: Uint8Array): CredentialResponse {
  const r = arcReader(b);
  const elements = readElements(r, ["U", "encUPrime", "X0Aux", "X1Aux", "X2Aux", "HAux"]);
  const responseProof = r.bytes(8 * Ns, "responseProof").slice();
  r.end("CredentialResponse");
  return { ...elements, responseProof };
}

/**
 * FinalizeCredential(clientSecrets, serverPublicKey, request, response). Throws PP_ERR_FORMAT
 * (VerifyError) when the response proof does not verify.
 */
export function finalizeCredential(
  clientSecrets: ClientSecrets,
  publicKey: ServerPublicKey,
  request: CredentialRequest,
  response: CredentialResponse,
): Credential {
  if (!verifyCredentialResponseProof(publicKey, response, request)) {
    throw new ProtocolError("PP_ERR_FORMAT", "credential response proof does not verify");
  }
  const UPrime = response.encUPrime
    .subtract(response.X0Aux)
    .subtract(response.X1Aux.multiply(clientSecrets.r1))
    .subtract(response.X2Aux.multiply(clientSecrets.r2));
  return { m1: clientSecrets.m1, U: response.U, UPrime, X1: publicKey.X1 };
}
