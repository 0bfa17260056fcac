// Small helpers every benchmark shares: numeric options and medians.

function option(args: string[], name: string): string | undefined {
  const flag = name.startsWith("--") ? name : `--${name}`;
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
}

/** `--name N`: a positive integer, or `dflt` when absent; anything else is an error naming the option. */
export function intArg(args: string[], name: string, dflt: number): number {
  const text = option(args, name);
  const v = text === undefined ? dflt : Number(text);
  if (!Number.isInteger(v) || v <= 0) throw new Error(`--${name.replace(/^--/, "")}: expected a positive integer`);
  return v;
}

/** `--name X`: a positive number, or `dflt` when absent; anything else is an error naming the option. */
export function numberArg(args: string[], name: string, dflt: number): number {
  const text = option(args, name);
  const v = text === undefined ? dflt : Number(text);
  if (!Number.isFinite(v) || v <= 0) throw new Error(`--${name.replace(/^--/, "")}: expected a positive number`);
  return v;
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
