// Lint rules for src/, test/ and bench/. gen/ is generated and never linted.
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["gen/**", "node_modules/**", "coverage/**"] },
  ...tseslint.configs.recommended,
  {
    rules: {
      "@typescript-eslint/no-explicit-any": "error",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "no-console": "off",
    },
  },
  {
    // The layering rule of DESIGN.md: domain <- engine <- server.
    files: ["src/domain/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", { patterns: [
        { group: ["**/store/**", "**/engine/**", "**/server/**", "mongodb", "node:*"], message: "domain/ is pure: no I/O, no store, no engine, no server." },
      ] }],
    },
  },
  {
    files: ["src/engine/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", { patterns: [
        { group: ["**/server/**", "**/*_service_pb.js", "@connectrpc/*", "mongodb"], message: "engine/ works against the storage port only; it never imports the server, generated services, Connect or the driver." },
      ] }],
    },
  },
  {
    files: ["src/store/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", { patterns: [
        { group: ["**/engine/**", "**/server/**", "@connectrpc/*"], message: "store/ knows nothing of the engine or the server." },
      ] }],
    },
  },
);
