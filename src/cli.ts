/**
 * `mailroom serve` (the default command): picks the store, starts the server,
 * says in its first log line where it listens and whether data is durable,
 * shuts down gracefully on SIGTERM/SIGINT, and re-reads its auth file on
 * SIGHUP.
 *
 * Exit codes: 0 after a graceful shutdown; 1 when it cannot start (the reason
 * in one line, no stack trace), on a second signal, or when shutdown failed.
 *
 * Beside it, the client commands (src/cli/: enqueue, claim, ack, tail, ...)
 * call a running server; their exit codes are in src/cli/connection.ts.
 */
import { Command } from "commander";
import { addMailboxCommands } from "./cli/mailbox-commands.js";
import { addPoolCommands } from "./cli/pool-commands.js";
import { addTailCommand } from "./cli/tail.js";
import { ConfigError, type ServerConfig, serverConfigFromOptions, serverConfigOptions } from "./config.js";
import type { Logger } from "./log.js";
import type { RunningServer } from "./server/server.js";
import type { SelectedStore } from "./store/select.js";

async function serve(config: ServerConfig): Promise<void> {
  // Loaded here, not at the top: the client commands need none of the server, the engine or the drivers.
  const [{ createLogger }, { startServer }, { selectStore }] = await Promise.all([import("./log.js"), import("./server/server.js"), import("./store/select.js")]);
  const logger = createLogger({ level: config.logLevel });
  let selected: SelectedStore | undefined;
  let server: RunningServer;
  try {
    selected = await selectStore({
      store: config.store,
      mongodbUri: config.mongodbUri,
      mongodbDatabase: config.mongodbDatabase,
      dataDir: config.dataDir,
      timeoutMs: config.storeTimeoutMs,
    });
    server = await startServer(config, { store: selected.store, logger });
  } catch (error) {
    await selected?.store.close().catch(() => undefined);
    logger.error(`cannot start: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  }

  // Before the listening line: whoever reads it may signal at once, and
  // until a handler is installed SIGTERM kills the process outright.
  stopOnSignals(server, logger);
  // Also before it: Node's default for SIGHUP is to exit.
  process.on("SIGHUP", () => void server.reloadAuth());
  const { store, location, fallbackReason } = selected;
  // Before the listening line, so nobody sees "listening" without having seen this.
  if (fallbackReason) {
    logger.warn(
      { backend: store.backend, durable: false, reason: fallbackReason },
      `DATA IS NOT DURABLE: running on the in-process ${store.backend} store because no MongoDB could be had (${fallbackReason}). ` +
        "Everything lives only in this process and is LOST when it exits. Set MONGODB_URI to a MongoDB replica set to keep it.",
    );
  }
  logger.info(
    {
      address: server.url,
      port: server.port,
      backend: store.backend,
      durable: store.durability.durable,
      durability: store.durability.description,
      location,
    },
    `mailroom listening on ${server.url}, store ${store.backend} (${store.durability.durable ? "durable" : "NOT durable"}) at ${location}`,
  );
}

function stopOnSignals(server: RunningServer, logger: Logger): void {
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn({ signal }, "second signal: exiting without finishing the shutdown");
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal }, `${signal} received`);
    server.close().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ error }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
}

const clientCommandsHelp = `
The client commands call a running server: --url (MAILROOM_URL, default
http://127.0.0.1:50051), --protocol grpc|grpc-web|connect, --token or, better,
MAILROOM_TOKEN (never printed), --json for one JSON object a line. Colour only
on a terminal (NO_COLOR turns it off).

Exit codes of the client commands: 0 ok; 1 server bug or unexpected failure;
2 bad command line (nothing sent); 3 INVALID_ARGUMENT or OUT_OF_RANGE; 4
NOT_FOUND; 5 FAILED_PRECONDITION, ALREADY_EXISTS or ABORTED (e.g. a stale
claim token); 6 UNAUTHENTICATED or PERMISSION_DENIED; 7 UNAVAILABLE,
DEADLINE_EXCEEDED or CANCELED (retry); 8 RESOURCE_EXHAUSTED.`;

const program = new Command("mailroom").description("Coordination service for AI agent runs: mailboxes, agent pools and an event journal.");
const serveCommand = program
  .command("serve", { isDefault: true })
  .description("Serve gRPC, gRPC-Web and Connect on one port. Every flag can also be set by the environment variable shown.");
for (const option of serverConfigOptions()) serveCommand.addOption(option);
serveCommand.action(async (options: Record<string, unknown>) => {
  let config: ServerConfig;
  try {
    config = serverConfigFromOptions(options);
  } catch (error) {
    if (error instanceof ConfigError) serveCommand.error(`error: ${error.message}`);
    throw error;
  }
  await serve(config);
});

addMailboxCommands(program);
addPoolCommands(program);
addTailCommand(program);
program.addHelpText("after", clientCommandsHelp);

await program.parseAsync(process.argv);
