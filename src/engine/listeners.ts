/** Listeners (or waiters) kept by key, each set dropped once empty. */

/** Adds `item` under `key`; returns what removes it (and the key's set, once empty). */
export function addKeyed<T>(map: Map<string, Set<T>>, key: string, item: T): () => void {
  let set = map.get(key);
  if (!set) map.set(key, (set = new Set()));
  set.add(item);
  return () => {
    set.delete(item);
    // Only this set: once emptied, a later add under the key may have made a new one.
    if (set.size === 0 && map.get(key) === set) map.delete(key);
  };
}
