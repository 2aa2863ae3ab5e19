/**
 * Decides once per test run which MongoDB the MongoDB suite uses, following
 * DESIGN.md: MONGODB_URI, else a mongodb-memory-server replica set, else the
 * suite is skipped and one line says so and why.
 */
import type {} from "vitest";
import type { TestProject } from "vitest/node";
import { startEphemeralReplicaSet } from "../../src/store/mongo/memory-server.js";
import { redactUri } from "../../src/store/select.js";

declare module "vitest" {
  export interface ProvidedContext {
    /** Replica set URI for the MongoDB suite; empty when it is skipped. */
    mongodbUri: string;
  }
}

export default async function setup(project: TestProject): Promise<(() => Promise<void>) | void> {
  const fromEnv = process.env.MONGODB_URI;
  if (fromEnv) {
    project.provide("mongodbUri", fromEnv);
    console.log(`MongoDB suite: running against MONGODB_URI ${redactUri(fromEnv)}`);
    return;
  }
  const started = await startEphemeralReplicaSet();
  if (started.ok) {
    project.provide("mongodbUri", started.uri);
    console.log(`MongoDB suite: running against a mongodb-memory-server replica set (${started.uri})`);
    return started.stop;
  }
  project.provide("mongodbUri", "");
  console.log(
    `MongoDB suite SKIPPED: MONGODB_URI is not set and mongodb-memory-server could not start mongod (${started.reason}). ` +
      "Every suite ran on the memory backend; set MONGODB_URI to a replica set to run them on MongoDB too.",
  );
}
