import type { ChangeEvent, Doc } from "../../src/store/port.js";

/** Reads the next `count` changes (the test's timeout bounds the wait). */
export async function take<T extends Doc>(iterator: AsyncIterator<ChangeEvent<T>>, count: number): Promise<ChangeEvent<T>[]> {
  const out: ChangeEvent<T>[] = [];
  while (out.length < count) {
    const next = await iterator.next();
    if (next.done) throw new Error(`change stream ended after ${out.length} of ${count} changes`);
    out.push(next.value);
  }
  return out;
}
