#!/usr/bin/env node
// Runs the TypeScript CLI directly: tsx compiles it on the fly, so there is no
// build step between a checkout and `npx mailroom serve`.
import { register } from "tsx/esm/api";

register();
await import("../src/cli.ts");
