/**
 * Run lists: which engine run allocated which seqs of a stream, as `RunStart`s in seq order. A seq and its run name
 * one message, so two run lists tell how far two records of a stream share their history (protocol.md §3, rule 8).
 *
 * @internal
 */
import type { RunStart } from "../Backend.js"

/** The run that allocated `seq`, if the list covers it. */
export const runAt = (runs: ReadonlyArray<RunStart>, seq: number): number | undefined => {
  let found: number | undefined
  for (const entry of runs) {
    if (entry.from > seq) break
    found = entry.run
  }
  return found
}

/** Adds `seq` of `run` (seqs arrive in order), keeping at most `keep` entries, the latest. */
export const extend = (
  runs: ReadonlyArray<RunStart>,
  run: number,
  seq: number,
  keep = Number.MAX_SAFE_INTEGER
): ReadonlyArray<RunStart> => {
  const last = runs[runs.length - 1]
  if (last !== undefined && last.run === run && last.from <= seq) return runs
  const next = [...runs.filter((entry) => entry.from < seq), { run, from: seq }]
  return next.length > keep ? next.slice(next.length - keep) : next
}

/** Drops what lies wholly below `firstKept`, and starts the first remaining entry there. */
export const prune = (runs: ReadonlyArray<RunStart>, firstKept: number): ReadonlyArray<RunStart> => {
  let start = 0
  while (start + 1 < runs.length && runs[start + 1]!.from <= firstKept) start++
  const first = runs[start]
  if (first === undefined) return runs
  if (start === 0 && first.from >= firstKept) return runs
  return [{ run: first.run, from: Math.max(first.from, firstKept) }, ...runs.slice(start + 1)]
}

/**
 * The highest seq up to `limit` such that every seq from `from` to it has the same run in both lists: the two
 * records share their history up to there. `from - 1` when they differ at `from` or a list does not cover it.
 */
export const sharedUpTo = (
  ours: ReadonlyArray<RunStart>,
  theirs: ReadonlyArray<RunStart>,
  from: number,
  limit: number
): number => {
  let seq = from
  while (seq <= limit) {
    const run = runAt(ours, seq)
    if (run === undefined || run !== runAt(theirs, seq)) break
    seq = Math.min(nextBoundary(ours, seq), nextBoundary(theirs, seq), limit + 1)
  }
  return seq - 1
}

const nextBoundary = (runs: ReadonlyArray<RunStart>, seq: number): number => {
  for (const entry of runs) if (entry.from > seq) return entry.from
  return Number.MAX_SAFE_INTEGER
}
