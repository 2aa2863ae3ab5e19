/**
 * Decides once per test run which MongoDB the MongoDB suite uses, following
 * DESIGN.md: MONGODB_URI, else a mongodb-memory-server replica set, else the
 * suite is skipped and one line says so and why.
 */
import { MongoClient } from "mongodb";
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
    return dropTestDatabasesAfterwards(fromEnv);
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

/** End-to-end servers get databases named `mailroom_e2e_*`. */
const E2E_DATABASE = /^mailroom_e2e_/;

/**
 * On a MongoDB the user gave us, drops the end-to-end databases this run
 * created (those that were not there when it began), so runs do not pile
 * databases up. (A mongodb-memory-server replica set is discarded whole.)
 */
async function dropTestDatabasesAfterwards(uri: string): Promise<() => Promise<void>> {
  const names = async (client: MongoClient) => (await client.db().admin().listDatabases({ nameOnly: true })).databases.map((d) => d.name).filter((name) => E2E_DATABASE.test(name));
  const client = new MongoClient(uri);
  const existing = await names(client).catch(() => undefined);
  await client.close();
  // Without the list from before, nothing tells this run's databases from another's: keep them all.
  if (existing === undefined) return async () => undefined;
  const before = new Set(existing);
  return async () => {
    const after = new MongoClient(uri);
    try {
      for (const name of await names(after)) if (!before.has(name)) await after.db(name).dropDatabase();
    } catch (error) {
      console.log(`could not drop the end-to-end test databases: ${error instanceof Error ? error.message : String(error)}`);
    } finally {
      await after.close();
    }
  };
}
