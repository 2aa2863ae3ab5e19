/**
 * Pool inspection: `mailroom pool <id>` (the snapshot: state, members,
 * counts) and `mailroom members <id>`.
 */
import type { Command } from "commander";
import { AgentPoolMemberSchema, AgentPoolSnapshotSchema } from "../../gen/mailroom/v1/pool_pb.js";
import { type ConnectionOptions, parseCount, withClients, withConnectionOptions } from "./connection.js";
import { memberLine, poolLines } from "./format.js";

export function addPoolCommands(program: Command): void {
  withConnectionOptions(
    program
      .command("pool")
      .description("Show a pool: whether it was created, its members and topics, how many messages and wake conditions it holds.")
      .argument("<pool-id>")
      .option("--max-messages <n>", "include at most this many recent messages (0 to 1000; JSON shows them)", parseCount),
  ).action((poolId: string, options: ConnectionOptions & { maxMessages?: number }) =>
    withClients(options, async ({ pools }, out) => {
      const { snapshot } = await pools.getPool({ poolId, maxMessages: options.maxMessages ?? 0 });
      if (!snapshot) return;
      if (out.json) out.message(AgentPoolSnapshotSchema, snapshot);
      else for (const line of poolLines(out.paint, snapshot)) out.line(line);
    }),
  );

  withConnectionOptions(program.command("members").description("List a pool's members.").argument("<pool-id>")).action((poolId: string, options: ConnectionOptions) =>
    withClients(options, async ({ pools }, out) => {
      const { members } = await pools.listMembers({ poolId });
      for (const member of members) {
        if (out.json) out.message(AgentPoolMemberSchema, member);
        else out.line(memberLine(out.paint, member));
      }
    }),
  );
}
