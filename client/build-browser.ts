// The browser bundle of the client library (esbuild, an ES module for <script type="module">).
//
// core/ohttp reaches its node:crypto primitives (fast-node.ts) only through a dynamic import with
// a computed specifier, which esbuild does not follow; this build also fails outright if anything
// node-only is pulled in (a `node:` builtin, or a file named *-node.ts), so the browser path stays
// on WebCrypto and the stock hpke-js primitives.
//
// esbuild is a development dependency: this module is only loaded by `veil client build-browser`
// and the browser test, never by the library itself.

import { existsSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { Plugin } from "esbuild";
import { ProtocolError } from "../core/errors.js";

export interface BrowserBundleOptions {
  /** Output file (written, with a source map next to it unless `sourcemap` is false). */
  outfile: string;
  /** Entry module (default: client/browser.ts of this project). */
  entry?: string;
  minify?: boolean;
  sourcemap?: boolean;
}

export interface BrowserBundle {
  outfile: string;
  bytes: number;
  /** Every input file that went into the bundle (project-relative or node_modules paths). */
  inputs: string[];
}

/** The project root: the nearest ancestor of this file with a package.json (works from dist/ too). */
export function projectRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, "package.json")) && existsSync(join(dir, "client"))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new ProtocolError("CFG_ERR_INVALID", "cannot find the project root from " + fileURLToPath(import.meta.url));
    dir = up;
  }
}

/** Refuses node-only modules in a browser build. */
export const browserOnlyPlugin: Plugin = {
  name: "veil-browser-only",
  setup(build) {
    build.onResolve({ filter: /^node:/ }, (args) => ({
      errors: [{ text: `node-only module ${args.path} imported by ${args.importer} in a browser build` }],
    }));
    build.onLoad({ filter: /-node\.(ts|js)$/ }, (args) => ({
      errors: [{ text: `node-only file ${args.path} in a browser build` }],
    }));
  },
};

export async function buildBrowserBundle(o: BrowserBundleOptions): Promise<BrowserBundle> {
  const esbuild = await import("esbuild");
  const root = projectRoot();
  const entry = o.entry ?? join(root, "client", "browser.ts");
  const outfile = resolve(o.outfile);
  const result = await esbuild.build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    format: "esm",
    platform: "browser",
    target: ["es2022", "chrome110", "firefox115", "safari16"],
    minify: o.minify === true,
    sourcemap: o.sourcemap !== false,
    metafile: true,
    logLevel: "silent",
    // NodeNext sources import "./x.js" for "./x.ts": esbuild maps those itself.
    resolveExtensions: [".ts", ".js", ".mjs", ".json"],
    plugins: [browserOnlyPlugin],
    legalComments: "none",
  });
  if (result.errors.length > 0) {
    throw new ProtocolError("CFG_ERR_INVALID", result.errors.map((e) => e.text).join("; "));
  }
  return { outfile, bytes: statSync(outfile).size, inputs: Object.keys(result.metafile.inputs) };
}
