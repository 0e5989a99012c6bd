/**
 * A map of STM cells that only grows: one `TRef` per key, made once, outside any transaction, by {@link Cells.ensure};
 * transactions then read and write the cells like any `TRef`. Reading and writing a key costs one cell, where a
 * `TMap` costs its buckets, a hash and a copy of the bucket on every write — the engine's transactions run once per
 * batch, but they run for every awaited `send`.
 *
 * A cell made and never set holds `undefined`, which reads as "no value": so making one is never observable.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as STM from "effect/STM"
import * as TRef from "effect/TRef"

export class Cells<K, V> {
  private readonly cells = new Map<K, TRef.TRef<V | undefined>>()

  /** The value under `key`, `undefined` when there is none. */
  get(key: K): STM.STM<V | undefined> {
    const cell = this.cells.get(key)
    return cell === undefined ? STM.succeed(undefined) : TRef.get(cell)
  }

  /** Sets the value under a key whose cell was made by {@link ensure}; any other key is a bug of the engine. */
  set(key: K, value: V): STM.STM<void> {
    const cell = this.cells.get(key)
    return cell === undefined ? STM.dieMessage(`no cell was made for ${String(key)}`) : TRef.set(cell, value)
  }

  /** Removes the value under `key`, if its cell was made. */
  clear(key: K): STM.STM<void> {
    const cell = this.cells.get(key)
    return cell === undefined ? STM.void : TRef.set(cell, undefined)
  }

  /** Makes the cells of keys that have none, before a transaction that may set them. */
  ensure(keys: Iterable<K>): Effect.Effect<void> {
    return Effect.suspend(() => {
      const missing = Array.from(keys).filter((key) => !this.cells.has(key))
      if (missing.length === 0) return Effect.void
      return Effect.forEach(missing, (key) =>
        Effect.map(TRef.make<V | undefined>(undefined), (cell) => {
          if (!this.cells.has(key)) this.cells.set(key, cell)
        }), { discard: true })
    })
  }

  /** Every value, in the order the keys were made. */
  values(): STM.STM<Array<V>> {
    // The cells are listed when the transaction runs, each time it runs: an iterator taken once would run out.
    return STM.suspend(() =>
      STM.map(
        STM.forEach(Array.from(this.cells.values()), TRef.get),
        (values) => values.filter((value): value is V => value !== undefined)
      )
    )
  }
}
