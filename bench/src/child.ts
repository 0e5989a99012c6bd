/**
 * Runs one case in this process and prints its result as one line `RESULT <json>` on stdout, for `main.ts`:
 *   node dist/run-<pid>/child.js <caseId> [--quick]     (the bundle `build.ts` writes)
 *   node --import tsx src/child.ts <caseId> [--quick]   (the sources, with `pnpm bench --tsx`)
 * A fresh process per case keeps one case's heap, sockets and timers from skewing the next.
 */
import { caseById } from "./cases.js"

const [id, ...flags] = process.argv.slice(2)
const found = id === undefined ? undefined : caseById(id)
if (found === undefined) {
  process.stderr.write(`unknown case ${id ?? "(none)"}\n`)
  process.exit(2)
}

const result = await found.run(flags.includes("--quick"))
// Exit explicitly once the line is flushed: some anchors leave handles (sockets, timers) that would keep the
// process alive, and an exit before the flush could cut the line off on a pipe.
process.stdout.write(`RESULT ${JSON.stringify(result)}\n`, () => process.exit(0))
