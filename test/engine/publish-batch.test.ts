/**
 * PublishBatch through the engine (seed: publish_all), on every backend,
 * with two server instances publishing at once: a batch lands whole, at
 * consecutive journal positions in the order given, or not at all.
 */
import { DEFAULT_NAMESPACE } from "../../src/domain/auth/namespaces.js";
import { beforeEach, describe, expect, it } from "vitest";
import { EventKind } from "../../gen/mailroom/v1/event_pb.js";
import { MailroomError } from "../../src/domain/errors.js";
import { parsePublishBatch } from "../../src/domain/events/batch.js";
import type { Engine } from "../../src/engine/engine.js";
import { useTwoInstances } from "../support/instances.js";
import { publish, runEvent } from "../support/pool-engine.js";
import { storeBackends } from "../support/stores.js";

function batch(engine: Engine, count: number, prefix: string) {
  return parsePublishBatch(Array.from({ length: count }, (_, i) => runEvent(`${prefix}-run`, EventKind.CUSTOM, { customKind: "step", eventId: `${prefix}-${i}` })), engine.clock.now());
}

describe.each(storeBackends())("PublishBatch on the $name backend", (backend) => {
  describe.skipIf(!backend.available)("two instances", () => {
    const instances = useTwoInstances(backend);
    let one: Engine;
    let two: Engine;

    beforeEach(() => {
      ({ one, two } = instances());
    });

    it("a batch of 100 lands at consecutive positions in the order given, nothing of anyone else's between, while others publish at once", async () => {
      const others = Promise.all(Array.from({ length: 30 }, (_, i) => publish(i % 2 ? one : two, "other")));
      const [a, b] = await Promise.all([one.events.publishBatch(batch(one, 100, "a")), two.events.publishBatch(batch(two, 100, "b"))]);
      await others;
      for (const [result, prefix] of [[a, "a"], [b, "b"]] as const) {
        expect(result.deduplicated).toBe(false);
        const seqs = result.envelopes.map((e) => Number(e.eventSeq));
        expect(seqs).toEqual(seqs.map((_, i) => seqs[0]! + i));
        expect(result.envelopes.map((e) => e.eventId)).toEqual(Array.from({ length: 100 }, (_, i) => `${prefix}-${i}`));
        const stored = await one.journal.range(seqs[0]! - 1, seqs.at(-1)!, 200);
        expect(stored.map((doc) => ("event_id" in doc ? doc.event_id : "hole"))).toEqual(result.envelopes.map((e) => e.eventId));
      }
    });

    it("a batch published again (a retry) answers the recorded events, deduplicated, and records nothing", async () => {
      const first = await one.events.publishBatch(batch(one, 5, "retry"));
      const head = await one.journal.reservedHead();
      const again = await two.events.publishBatch(batch(two, 5, "retry"));
      expect(again.deduplicated).toBe(true);
      expect(again.envelopes.map((e) => [e.eventId, e.eventSeq])).toEqual(first.envelopes.map((e) => [e.eventId, e.eventSeq]));
      expect(await one.journal.reservedHead()).toBe(head);
    });

    it("a batch mixing recorded and new event ids is refused ALREADY_EXISTS naming the first recorded one, and records nothing", async () => {
      await one.events.publishBatch(batch(one, 3, "mixed"));
      const head = await one.journal.reservedHead();
      const mixed = [...batch(one, 2, "fresh"), ...batch(one, 3, "mixed")];
      const refused = await two.events.publishBatch(mixed).catch((error: unknown) => error);
      expect(refused).toBeInstanceOf(MailroomError);
      expect([(refused as MailroomError).code, (refused as MailroomError).details.field]).toEqual(["already_exists", "events[2].envelope.event_id"]);
      expect(await one.journal.reservedHead()).toBe(head);
      expect(await one.journal.positionsIn(DEFAULT_NAMESPACE, ["fresh-0", "fresh-1"])).toEqual(new Map());
    });
  });
});
