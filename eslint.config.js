// Lint: typescript-eslint's recommended type-checked rules (they read the types, so they catch a
// promise nobody awaits or a promise passed where a callback is expected) on the sources and tests.
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["dist/", "node_modules/", "coverage/", "data/", "client/dist/"] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      // tsconfig.test.json covers every TypeScript file (sources, tests, benchmarks).
      parserOptions: { project: ["./tsconfig.test.json"], tsconfigRootDir: import.meta.dirname },
    },
  },
  {
    files: ["**/*.ts"],
    rules: {
      "@typescript-eslint/no-explicit-any": "error",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@typescript-eslint/no-floating-promises": "error",
      "@typescript-eslint/no-misused-promises": "error",
      // Off on purpose: our async functions without an await implement promise-returning contracts
      // (NonceStore, hpke-js's KDF and AEAD, Fastify handlers and hooks), and are async so that
      // every failure reaches the caller as a rejection. The rule would have them drop `async` and
      // throw synchronously instead, which callers of a promise API do not expect.
      "@typescript-eslint/require-await": "off",
      "no-restricted-syntax": ["error", { selector: "ExportDefaultDeclaration", message: "no default exports" }],
    },
  },
  {
    // Vitest reads its configuration from a default export.
    files: ["vitest.config.ts"],
    rules: { "no-restricted-syntax": "off" },
  },
  {
    // Plain JavaScript launchers: no type information.
    files: ["**/*.js"],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: {
      ...tseslint.configs.disableTypeChecked.languageOptions,
      globals: { process: "readonly", console: "readonly", Buffer: "readonly" },
    },
  },
);
