/**
 * The request gate hands the authenticated principal to the handler through
 * the call's context (what handlers will pass to the engine's namespace
 * view), and refuses before the handler runs. In process, over Connect's
 * router transport.
 */
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { MailboxService } from "../../gen/mailroom/v1/mailbox_service_pb.js";
import { Authenticator, sha256Hex } from "../../src/server/auth.js";
import { NamespaceLimiter } from "../../src/server/namespace-limits.js";
import { principalOf } from "../../src/server/principal.js";
import { requestGate } from "../../src/server/request-gate.js";
import { StreamCredentials } from "../../src/server/stream-credentials.js";

/** A MailboxService whose CountDispatches records the principal it was called by. */
async function gatedMailbox() {
  const path = join(mkdtempSync(join(tmpdir(), "gate-")), "auth.json");
  writeFileSync(path, JSON.stringify({ principals: [{ name: "billing-reader", token_sha256: sha256Hex("t1"), namespace: "billing", roles: ["observer"] }] }));
  const auth = await Authenticator.start({ kind: "file", path });
  const seen: string[] = [];
  const transport = createRouterTransport(
    (router) =>
      router.service(MailboxService, {
        countDispatches(_request, context) {
          const principal = principalOf(context);
          seen.push(`${principal.name}@${principal.namespace}`);
          return { total: 0n };
        },
      }),
    { router: { requestGate: requestGate({ auth, limiter: new NamespaceLimiter(1), streams: new StreamCredentials() }) } },
  );
  return { mailbox: createClient(MailboxService, transport), seen };
}

describe("the principal in the handler context", () => {
  it("is the one the bearer token names", async () => {
    const { mailbox, seen } = await gatedMailbox();
    await mailbox.countDispatches({}, { headers: { authorization: "Bearer t1" } });
    expect(seen).toEqual(["billing-reader@billing"]);
  });

  it("is never reached by a refused call", async () => {
    const { mailbox, seen } = await gatedMailbox();
    const codeOf = (call: Promise<unknown>) => call.then(() => "ok", (error: unknown) => ConnectError.from(error).code);
    const codes = [
      await codeOf(mailbox.countDispatches({})),
      await codeOf(mailbox.countDispatches({}, { headers: { authorization: "Bearer nope" } })),
      await codeOf(mailbox.enqueue({}, { headers: { authorization: "Bearer t1" } })),
    ];
    expect(codes).toEqual([Code.Unauthenticated, Code.Unauthenticated, Code.PermissionDenied]);
    expect(seen).toEqual([]);
  });
});
