// Throwaway certificates for TLS tests: a CA and certificates it signs, made by openssl in a
// temporary directory (removed by close()).

import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface TestCa {
  dir: string;
  /** Path of a file in the directory. */
  file(name: string): string;
  /** Contents of a file in the directory. */
  pem(name: string): Buffer;
  /** A self-signed CA: `<name>.pem` and `<name>.key`. */
  makeCa(name: string): void;
  /** A certificate signed by `ca` with the given X.509 v3 extensions: `<name>.pem` and `<name>.key`. */
  makeCert(name: string, ca: string, ext: string): void;
  close(): void;
}

/** A server certificate for 127.0.0.1. */
export const SERVER_EXT = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n";

export function createTestCa(prefix: string): TestCa {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const file = (name: string): string => join(dir, name);
  const openssl = (...args: string[]): void => {
    execFileSync("openssl", args, { cwd: dir, stdio: "ignore" });
  };
  return {
    dir,
    file,
    pem: (name) => readFileSync(file(name)),
    makeCa(name) {
      openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", `${name}.key`, "-out", `${name}.pem`, "-days", "2", "-subj", `/CN=${name}`);
    },
    makeCert(name, ca, ext) {
      writeFileSync(file(`${name}.ext`), ext);
      openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${name}`);
      openssl("x509", "-req", "-in", `${name}.csr`, "-CA", `${ca}.pem`, "-CAkey", `${ca}.key`, "-CAcreateserial", "-out", `${name}.pem`, "-days", "2", "-extfile", `${name}.ext`);
    },
    close() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A CA `ca` and, signed by it, a server certificate `relay` for 127.0.0.1 (`relay.pem`, `relay.key`). */
export function createServerTestCa(prefix: string): TestCa {
  const ca = createTestCa(prefix);
  ca.makeCa("ca");
  ca.makeCert("relay", "ca", SERVER_EXT);
  return ca;
}
