/**
 * The `intersession` command-line program: `peer` runs a peer over TCP with a SQLite store, `demo` shows two of
 * them surviving `kill -9` while they stream messages both ways, `inspect` shows what a store holds without writing
 * to it, and `dead-letters list|replay|purge` works on a stopped store's dead letters.
 *
 * Help and errors are coloured only on a terminal, and never when `NO_COLOR` is set (https://no-color.org).
 *
 * @since 0.1.0
 */
import * as Args from "@effect/cli/Args"
import * as CliConfig from "@effect/cli/CliConfig"
import * as Command from "@effect/cli/Command"
import * as HelpDoc from "@effect/cli/HelpDoc"
import * as Span from "@effect/cli/HelpDoc/Span"
import * as Options from "@effect/cli/Options"
import * as Usage from "@effect/cli/Usage"
import * as ValidationError from "@effect/cli/ValidationError"
import * as NodeStream from "@effect/platform-node/NodeStream"
import * as FileSystem from "@effect/platform/FileSystem"
import * as Delivery from "@intersession/core/Delivery"
import * as ILM from "@intersession/core/ILM"
import * as Lane from "@intersession/core/Lane"
import * as PeerId from "@intersession/core/PeerId"
import * as Console from "effect/Console"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as HashSet from "effect/HashSet"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import { fileURLToPath } from "node:url"
import * as DeadLetterCommands from "./internal/deadLetterCommands.js"
import * as Demo from "./internal/demo.js"
import * as DemoPeer from "./internal/demoPeer.js"
import * as Inspect from "./internal/inspect.js"
import * as SqlBackend from "./SqlBackend.js"
import * as SqliteBackend from "./SqliteBackend.js"
import * as TcpNetwork from "./TcpNetwork.js"

/**
 * The demo ended and failed: a promise broke (something was lost, duplicated or delivered out of order), or it was
 * told to kill and no kill landed while messages were in flight.
 *
 * @since 0.1.0
 * @category errors
 */
export class DemoFailedError extends Data.TaggedError("DemoFailedError")<{ readonly report: Demo.Report }> {
  override get message(): string {
    return `The demo failed: ${this.report.failures.join("; ")}`
  }
}

/**
 * No pre-shared key: the peers of a deployment authenticate each other with one.
 *
 * @since 0.1.0
 * @category errors
 */
export class MissingKeyError extends Data.TaggedError("MissingKeyError")<Record<never, never>> {
  override get message(): string {
    return "A pre-shared key is needed: pass --key-file FILE or set INTERSESSION_KEY (at least 16 characters)"
  }
}

/**
 * The peer cannot listen on its `--listen` address: the reason is the operating system's (the address is in use, is
 * not one of this host's, needs privileges, …).
 *
 * @since 0.2.0
 * @category errors
 */
export class ListenError extends Data.TaggedError("ListenError")<{
  readonly address: TcpNetwork.Address
  /** The network's error, whose cause is the operating system's. */
  readonly cause: TcpNetwork.TcpNetworkError
}> {
  override get message(): string {
    const network = this.cause.message
    const reason = listenReason(this.cause.cause)
    // A network whose message already says why is printed as it is.
    return reason === undefined || network.includes(reason.code) ? network : `${network}: ${reason.text}`
  }
}

/** Why a listener could not start, from the first error code along the cause chain. */
const listenReason = (cause: unknown): { readonly code: string; readonly text: string } | undefined => {
  let current = cause
  for (let depth = 0; depth < 5 && typeof current === "object" && current !== null; depth++) {
    if ("code" in current && typeof current.code === "string") {
      const code = current.code
      const message = "message" in current && typeof current.message === "string" ? current.message : code
      const why = code === "EADDRINUSE"
        ? "the address is already in use: another program, or another peer, listens on it"
        : code === "EADDRNOTAVAIL"
        ? "the host is not an address of this machine"
        : code === "EACCES"
        ? "permission denied (ports below 1024 need privileges)"
        : code === "ENOTFOUND" || code === "EAI_AGAIN"
        ? "the host name does not resolve"
        : message
      return { code, text: `${why} (${code})` }
    }
    current = "cause" in current ? current.cause : undefined
  }
  return undefined
}

const invalid = (message: string) => ValidationError.invalidValue(HelpDoc.p(message))

const parseAddress = (value: string): Effect.Effect<TcpNetwork.Address, ValidationError.ValidationError> => {
  const at = value.lastIndexOf(":")
  const host = value.slice(0, at)
  const port = Number(value.slice(at + 1))
  return at > 0 && Number.isInteger(port) && port >= 0 && port < 65536
    ? Effect.succeed({ host, port })
    : Effect.fail(invalid(`${JSON.stringify(value)} is not host:port`))
}

const parsePeer = (value: string) => {
  const at = value.indexOf("=")
  const id = value.slice(0, at)
  if (at <= 0 || !PeerId.isPeerId(id)) return Effect.fail(invalid(`${JSON.stringify(value)} is not ID=host:port`))
  return Effect.flatMap(parseAddress(value.slice(at + 1)), (address) =>
    address.port === 0
      ? Effect.fail(invalid(`--peer ${value}: port 0 cannot be dialled; give the port ${id} listens on`))
      : Effect.succeed([id, address] as const))
}

/** The peers of `--peer` are the others: not this peer's own `--id`, and each once. */
const checkPeers = <
  A extends { readonly id: PeerId.PeerId; readonly peers: ReadonlyArray<readonly [PeerId.PeerId, unknown]> }
>(
  options: A
): Effect.Effect<A, ValidationError.ValidationError> => {
  const seen = new Set<string>()
  for (const [id] of options.peers) {
    if (id === options.id) {
      return Effect.fail(invalid(`--peer ${id}=…: ${id} is this peer's own id (--id); list the other peers only`))
    }
    if (seen.has(id)) return Effect.fail(invalid(`--peer ${id}=… is given twice: give each peer once`))
    seen.add(id)
  }
  return Effect.succeed(options)
}

const parsePeerId = (id: string) =>
  PeerId.isPeerId(id) ? Effect.succeed(id) : Effect.fail(invalid(`${JSON.stringify(id)} is not a peer id`))

const idOption = Options.text("id").pipe(Options.withDescription("this peer's id"), Options.mapEffect(parsePeerId))
const listenOption = Options.text("listen").pipe(
  Options.withDescription("where to listen, as host:port"),
  Options.mapEffect(parseAddress)
)
const peersOption = Options.text("peer").pipe(
  Options.withDescription("another peer, as ID=host:port (repeat for more)"),
  Options.repeated,
  Options.mapEffect((values) => Effect.forEach(values, parsePeer))
)
const dbOption = Options.text("db").pipe(Options.withDescription("the SQLite file of this peer's store"))
const keyFileOption = Options.file("key-file").pipe(
  Options.withDescription("a file holding the pre-shared key (else INTERSESSION_KEY)"),
  Options.optional
)

/** The key from `--key-file`, or else from `INTERSESSION_KEY`. */
const readKey = (keyFile: Option.Option<string>) =>
  Effect.gen(function*() {
    if (Option.isSome(keyFile)) {
      const fs = yield* FileSystem.FileSystem
      return Redacted.make((yield* fs.readFileString(keyFile.value)).trim())
    }
    const fromEnv = process.env["INTERSESSION_KEY"]
    if (fromEnv === undefined || fromEnv === "") return yield* new MissingKeyError()
    return Redacted.make(fromEnv)
  })

const decoder = new TextDecoder()
const encoder = new TextEncoder()

/** One line of input: `status`, `ID: text` to a peer of the address book, or `text` to the default peer. */
const handleLine = (
  ilm: ILM.ILM["Type"],
  known: ReadonlySet<string>,
  defaultPeer: PeerId.PeerId | undefined,
  line: string
) =>
  Effect.gen(function*() {
    const input = line.trim()
    if (input === "") return
    if (input === "status") {
      const stats = yield* ilm.stats
      const connected = Array.from(yield* ilm.peers.get)
      yield* Console.log(`connected: ${connected.length === 0 ? "none" : connected.join(", ")}`)
      for (const out of stats.outbound) {
        yield* Console.log(
          `  to ${out.peer} [${out.lane}]: ${out.pending} pending, acknowledged up to ${out.ackedUpTo}`
        )
      }
      return
    }
    const colon = input.indexOf(":")
    const named = colon > 0 ? input.slice(0, colon).trim() : ""
    const addressed = known.has(named) && PeerId.isPeerId(named)
    const to = addressed ? named : defaultPeer
    const text = addressed ? input.slice(colon + 1).trim() : input
    if (to === undefined) return yield* Console.error("No peer to send to: write ID: text")
    const sent = yield* Effect.either(ilm.send(to, encoder.encode(text)))
    if (sent._tag === "Left") yield* Console.error(sent.left.message)
  })

const peerDescription = "Run a peer: lines on stdin are sent (ID: text), received messages are printed"

const peerCommand = Command.make(
  "peer",
  {
    self: Options.all({ id: idOption, listen: listenOption, peers: peersOption }).pipe(Options.mapEffect(checkPeers)),
    db: dbOption,
    keyFile: keyFileOption,
    to: Options.text("to").pipe(
      Options.withDescription("the peer plain lines go to (else the first --peer)"),
      Options.mapEffect(parsePeerId),
      Options.optional
    ),
    synchronous: Options.choice("synchronous", ["NORMAL", "FULL"]).pipe(
      Options.withDescription("NORMAL survives a crash of the process, FULL a loss of power"),
      Options.withDefault("NORMAL" as const)
    )
  },
  ({ self: { id, listen, peers }, ...options }) =>
    Effect.gen(function*() {
      const key = yield* readKey(options.keyFile)
      const defaultPeer = Option.getOrUndefined(options.to) ?? peers[0]?.[0]
      const known = new Set<string>(peers.map(([id]) => id))
      yield* Effect.gen(function*() {
        const ilm = yield* ILM.ILM
        const inbox = yield* Delivery.Inbox
        yield* Effect.forkScoped(Stream.runForEach(inbox.messages, (message) =>
          Console.log(
            `${message.source} [${message.lane} #${message.seq}]: ${decoder.decode(message.payload)}`
          )))
        yield* Effect.forkScoped(Stream.runForEach(ilm.peers.changes, (peers) =>
          Console.log(`connected: ${HashSet.size(peers) === 0 ? "none" : Array.from(peers).join(", ")}`)))
        yield* NodeStream.stdin.pipe(
          Stream.decodeText(),
          Stream.splitLines,
          Stream.runForEach((line) =>
            handleLine(ilm, known, defaultPeer, line)
          )
        )
        // Input ended: give what was sent a moment to be acknowledged before the store closes.
        yield* Effect.ignore(ilm.drain("10 seconds"))
      }).pipe(
        Effect.scoped,
        Effect.provide(
          ILM.layer().pipe(
            Layer.provideMerge(Delivery.layerInbox()),
            Layer.provide(TcpNetwork.layer({ peer: id, listen, peers: new Map(peers), key })),
            Layer.provide(SqliteBackend.layer({ filename: options.db, synchronous: options.synchronous }))
          )
        ),
        // The store's errors say what is wrong with it as they are; the network's says where it cannot listen, and
        // this adds why.
        Effect.catchTag("TcpNetworkError", (error) =>
          Effect.fail(error.reason === "Listen" ? new ListenError({ address: listen, cause: error }) : error))
      )
    })
).pipe(Command.withDescription(peerDescription))

const windowOption = Options.integer("window").pipe(
  Options.withDescription("at most this many of a peer's messages unacknowledged at once, sent a tenth at a time"),
  Options.withDefault(DemoPeer.defaultWindow),
  Options.mapEffect((window) => window >= 1 ? Effect.succeed(window) : Effect.fail(invalid("--window is at least 1")))
)

/**
 * One peer of the demo, the process `demo` starts: `intersession demo-peer …`. It is no part of the public command
 * tree, so that help never shows it; {@link run} selects it by its first argument.
 */
const demoPeerCommand = Command.make(
  "demo-peer",
  {
    id: idOption,
    listen: listenOption,
    partner: Options.text("peer").pipe(
      Options.withDescription("the other peer, as ID=host:port"),
      Options.mapEffect(parsePeer)
    ),
    db: dbOption,
    keyFile: keyFileOption,
    count: Options.integer("count").pipe(Options.withDescription("messages to send")),
    window: windowOption
  },
  (options) =>
    Effect.gen(function*() {
      yield* DemoPeer.run({
        id: options.id,
        listen: options.listen,
        partner: options.partner[0],
        partnerAddress: options.partner[1],
        db: options.db,
        key: yield* readKey(options.keyFile),
        count: options.count,
        window: options.window
      })
    })
).pipe(Command.withDescription("One peer of the demo (the demo starts it)"))

const bar = (done: number, total: number, width = 24) => {
  const filled = total === 0 ? width : Math.min(width, Math.round((done / total) * width))
  return "█".repeat(filled) + "░".repeat(width - filled)
}

const printProgress = (messages: number) => {
  let calls = 0
  const tty = process.stdout.isTTY === true
  return (progress: Demo.RunProgress) =>
    Effect.sync(() => {
      calls++
      const [a, b] = progress.peers
      if (a === undefined || b === undefined) return
      const delivered = a.received + b.received
      const rate = progress.elapsedMillis > 0 ? Math.round((delivered * 1000) / progress.elapsedMillis) : 0
      const seconds = (progress.elapsedMillis / 1000).toFixed(1)
      const line = `${a.id}→${b.id} ${bar(b.received, messages)} ${b.received}/${messages}  ` +
        `${b.id}→${a.id} ${bar(a.received, messages)} ${a.received}/${messages}  ` +
        `kills ${progress.kills} (${progress.killsMidTransfer} mid-transfer)  ${rate} msg/s  ${seconds} s`
      if (tty) process.stdout.write(`\r${line}`)
      else if (calls % 4 === 1) process.stdout.write(`${line}\n`)
    })
}

/**
 * The verification table of a demo run.
 *
 * @since 0.1.0
 * @category formatting
 */
export const formatReport = (report: Demo.Report): string => {
  const rows: Array<[string, ...Array<string | number>]> = [
    ["", ...report.directions.map((d) => `${d.from}→${d.to}`)],
    ["sent", ...report.directions.map((d) => d.sent)],
    ["delivered", ...report.directions.map((d) => d.delivered)],
    ["lost", ...report.directions.map((d) => d.lost)],
    ["duplicated", ...report.directions.map((d) => d.duplicated)],
    ["out of order", ...report.directions.map((d) => d.outOfOrder)]
  ]
  const table = rows.map(([label, ...cells]) => label.padEnd(14) + cells.map((c) => String(c).padStart(8)).join(""))
  const restarts = Object.entries(report.restarts).map(([id, n]) => `${id} ${n}`).join(", ")
  const through = report.kills > 0 ? " through kills mid-transfer" : ""
  const inFlight = report.killLog.map((kill) => {
    const { fromVictim, toVictim } = Demo.inFlight(kill)
    return fromVictim + toVictim
  })
  const failures = report.failures.map((failure) => `FAILED: ${failure}`)
  return [
    ...table,
    `kills mid-transfer: ${report.killsMidTransfer} of ${report.kills}` +
    (inFlight.length > 0 ? ` (messages in flight at each, at least: ${inFlight.join(" ")})` : ""),
    `restarts after kill -9: ${report.kills} (${restarts})`,
    `time: ${(report.elapsedMillis / 1000).toFixed(1)} s, ${report.messagesPerSecond} messages per second delivered`,
    ...(report.ok ? [`every promise held${through}: nothing lost, duplicated or out of order`] : failures)
  ].join("\n")
}

const demoDescription = "Two peers, kill -9s while messages are in flight, and a check that every message arrived once"

const demoCommand = Command.make(
  "demo",
  {
    messages: Options.integer("messages").pipe(
      Options.withDescription("messages each peer sends to the other"),
      Options.withDefault(2000)
    ),
    kills: Options.integer("kills").pipe(
      Options.withDescription("kill -9s, spread over both peers and the transfer, aimed at messages in flight"),
      Options.withDefault(8)
    ),
    window: windowOption,
    seed: Options.integer("seed").pipe(Options.withDescription("seed of the kill schedule"), Options.optional),
    timeout: Options.integer("timeout").pipe(
      Options.withDescription("seconds before giving up (else a bound from --messages and --kills)"),
      Options.optional
    )
  },
  (options) =>
    Effect.gen(function*() {
      const seed = Option.getOrElse(options.seed, () => Math.floor(Math.random() * 1_000_000))
      yield* Console.log(
        `Two peers over TCP with SQLite stores stream ${options.messages} messages each way; ` +
          `${options.kills} kill -9s aimed at messages in flight (seed ${seed}).`
      )
      const report = yield* Demo.run({
        messages: options.messages,
        kills: options.kills,
        seed,
        window: options.window,
        timeout: Option.match(options.timeout, {
          onNone: () => Demo.budget(options.messages, options.kills),
          onSome: (seconds) => Duration.seconds(seconds)
        }),
        onProgress: printProgress(options.messages)
      }).pipe(Effect.scoped)
      yield* Console.log(`\n\n${formatReport(report)}`)
      if (!report.ok) return yield* new DemoFailedError({ report })
    })
).pipe(Command.withDescription(demoDescription))

const storeArg = Args.text({ name: "store" }).pipe(
  Args.withDescription("the store: a SQLite file, or a postgres:// URL")
)
const tablePrefixOption = Options.text("table-prefix").pipe(
  Options.withDescription("the prefix of the store's tables"),
  Options.withDefault(SqlBackend.defaultTablePrefix)
)
const jsonOption = Options.boolean("json").pipe(Options.withDescription("print JSON, for machines"))

const inspectDescription =
  "What a store holds: incarnations, pending messages, dead letters (read-only, engine stopped)"

const inspectCommand = Command.make(
  "inspect",
  { store: storeArg, tablePrefix: tablePrefixOption, json: jsonOption },
  (options) =>
    Effect.gen(function*() {
      const report = yield* Inspect.inspect(Inspect.target(options.store, options.tablePrefix))
      yield* Console.log(options.json ? Inspect.formatJson(report) : Inspect.formatReport(report))
    })
).pipe(Command.withDescription(inspectDescription))

/** The options that select dead letters: every one given must match. */
const filterOptions = {
  peer: Options.text("peer").pipe(
    Options.withDescription("only those from this peer"),
    Options.mapEffect(parsePeerId),
    Options.optional
  ),
  lane: Options.text("lane").pipe(
    Options.withDescription("only those of this lane"),
    Options.mapEffect((lane) =>
      Lane.isLane(lane) ? Effect.succeed(lane) : Effect.fail(invalid(`${JSON.stringify(lane)} is not a lane`))
    ),
    Options.optional
  ),
  // `Options.text`: `@effect/cli` 0.77 refuses every value of a repeated `Options.integer` ("'1' is not a integer").
  ids: Options.text("id").pipe(
    Options.withDescription("only the dead letter of this id (repeat for more)"),
    Options.repeated,
    Options.mapEffect((values) =>
      Effect.forEach(values, (value) =>
        /^[1-9][0-9]{0,15}$/.test(value) && Number.isSafeInteger(Number(value))
          ? Effect.succeed(Number(value))
          : Effect.fail(invalid(`--id ${value}: a dead letter's id is a positive integer`)))
    )
  )
}

const filterOf = (options: {
  readonly peer: Option.Option<PeerId.PeerId>
  readonly lane: Option.Option<string>
  readonly ids: ReadonlyArray<number>
}) => ({
  peer: Option.getOrUndefined(options.peer),
  lane: Option.getOrUndefined(options.lane),
  ids: options.ids.length === 0 ? undefined : options.ids
})

const deadLettersListCommand = Command.make(
  "list",
  {
    store: storeArg,
    tablePrefix: tablePrefixOption,
    ...filterOptions,
    limit: Options.integer("limit").pipe(
      Options.withDescription("at most this many, lowest id first"),
      Options.withDefault(1000)
    ),
    json: jsonOption
  },
  (options) =>
    Effect.gen(function*() {
      const letters = yield* DeadLetterCommands.list(Inspect.target(options.store, options.tablePrefix), {
        ...filterOf(options),
        limit: options.limit
      })
      yield* Console.log(
        options.json ? DeadLetterCommands.formatListJson(letters) : DeadLetterCommands.formatList(letters)
      )
    })
).pipe(Command.withDescription("List the dead letters of a stopped store"))

const deadLettersReplayCommand = Command.make(
  "replay",
  { store: storeArg, tablePrefix: tablePrefixOption, ...filterOptions },
  (options) =>
    Effect.gen(function*() {
      const marked = yield* DeadLetterCommands.requestReplay(
        Inspect.target(options.store, options.tablePrefix),
        filterOf(options)
      )
      yield* Console.log(
        `Marked ${marked} dead letter${marked === 1 ? "" : "s"} for replay: ` +
          "the engine delivers them when it next starts on the store"
      )
    })
).pipe(Command.withDescription("Mark dead letters of a stopped store to be delivered when its engine next starts"))

const deadLettersPurgeCommand = Command.make(
  "purge",
  {
    store: storeArg,
    tablePrefix: tablePrefixOption,
    selection: Options.all({
      ...filterOptions,
      all: Options.boolean("all").pipe(Options.withDescription("purge every dead letter (when no filter is given)"))
    }).pipe(
      Options.mapEffect((selection) =>
        selection.all || Option.isSome(selection.peer) || Option.isSome(selection.lane) || selection.ids.length > 0
          ? Effect.succeed(selection)
          : Effect.fail(
            invalid("purge deletes dead letters for good: select some with --peer, --lane or --id, or all with --all")
          )
      )
    )
  },
  (options) =>
    Effect.gen(function*() {
      const purged = yield* DeadLetterCommands.purge(
        Inspect.target(options.store, options.tablePrefix),
        filterOf(options.selection)
      )
      yield* Console.log(`Purged ${purged} dead letter${purged === 1 ? "" : "s"}`)
    })
).pipe(Command.withDescription("Delete dead letters of a stopped store"))

const deadLettersDescription = "List, replay or purge the dead letters of a stopped store"

const deadLettersCommand = Command.make("dead-letters").pipe(
  Command.withDescription(deadLettersDescription),
  Command.withSubcommands([deadLettersListCommand, deadLettersReplayCommand, deadLettersPurgeCommand])
)

const name = "intersession"
const summary = "reliable messaging between peers"

/**
 * The program: `intersession peer …`, `intersession demo …`, `intersession inspect …`,
 * `intersession dead-letters …`.
 *
 * @since 0.1.0
 * @category commands
 */
export const command = Command.make(name).pipe(
  Command.withSubcommands([peerCommand, demoCommand, inspectCommand, deadLettersCommand])
)

/**
 * How the command line is parsed and its help shown: the options `--help`, `--version`, `--log-level` and
 * `--completions` of every command are listed once, in the program's help, rather than in each command's.
 */
const cliConfig = CliConfig.make({ showBuiltIns: false })

/** The package's version, from its `package.json`: one level above `src/` and `dist/` alike. */
const packageVersion = Effect.gen(function*() {
  const fs = yield* FileSystem.FileSystem
  const text = yield* fs.readFileString(fileURLToPath(new URL("../package.json", import.meta.url)))
  const { version } = yield* Schema.decodeUnknown(Schema.parseJson(Schema.Struct({ version: Schema.String })))(text)
  return version
}).pipe(
  // The package ships its package.json: without it the installation is broken.
  Effect.orDie
)

/** A command's usage after the name of the command it belongs to: `dead-letters list …`. */
const under = (parent: string, usage: Usage.Usage) => Usage.concat(Usage.named([parent], Option.none()), usage)

/** The commands of `dead-letters`: their usage under `dead-letters`, and their help. */
const deadLetterCommands: ReadonlyArray<
  { readonly name: string; readonly usage: Usage.Usage; readonly help: HelpDoc.HelpDoc }
> = [
  ["list", Command.getUsage(deadLettersListCommand), Command.getHelp(deadLettersListCommand, cliConfig)] as const,
  ["replay", Command.getUsage(deadLettersReplayCommand), Command.getHelp(deadLettersReplayCommand, cliConfig)] as const,
  ["purge", Command.getUsage(deadLettersPurgeCommand), Command.getHelp(deadLettersPurgeCommand, cliConfig)] as const
].map(([name, usage, help]) => ({ name, usage: under("dead-letters", usage), help }))

/**
 * The public commands, as the help shows them: those the program's help lists (`listed`), and the commands of
 * `dead-letters`, whose help `dead-letters list --help` shows.
 */
const commands: ReadonlyArray<{
  readonly name: string
  readonly description: string
  readonly usages: ReadonlyArray<Usage.Usage>
  readonly help: HelpDoc.HelpDoc
  readonly listed: boolean
}> = [
  {
    name: "peer",
    description: peerDescription,
    usages: [Command.getUsage(peerCommand)],
    help: Command.getHelp(peerCommand, cliConfig),
    listed: true
  },
  {
    name: "demo",
    description: demoDescription,
    usages: [Command.getUsage(demoCommand)],
    help: Command.getHelp(demoCommand, cliConfig),
    listed: true
  },
  {
    name: "inspect",
    description: inspectDescription,
    usages: [Command.getUsage(inspectCommand)],
    help: Command.getHelp(inspectCommand, cliConfig),
    listed: true
  },
  {
    name: "dead-letters",
    description: deadLettersDescription,
    usages: deadLetterCommands.map(({ usage }) => usage),
    help: Command.getHelp(deadLettersCommand, cliConfig),
    listed: true
  },
  ...deadLetterCommands.map(({ help, name, usage }) => ({
    name: `dead-letters ${name}`,
    description: "",
    usages: [usage],
    help,
    listed: false
  }))
]

/** The options of every command, which `@effect/cli` adds. */
const builtIns: ReadonlyArray<readonly [names: string, description: string]> = [
  ["-h, --help", "show the help of the program, or of the command before it"],
  ["--version", "show the version"],
  ["--log-level LEVEL", "the least level of logs shown (all, trace, debug, info, warning, error, fatal, none)"],
  ["--completions SHELL", "print a completion script for sh, bash, fish or zsh"]
]

/** `name  description` lines, the descriptions aligned. */
const table = (rows: ReadonlyArray<readonly [string, string]>): ReadonlyArray<HelpDoc.HelpDoc> => {
  const width = Math.max(...rows.map(([name]) => name.length)) + 2
  return rows.map(([name, description]) =>
    HelpDoc.p(Span.spans([Span.strong(name.padEnd(width)), Span.text(description)]))
  )
}

/** The head of every help: the program's name, version and summary, and the usage of the command. */
const helpHead = (version: string, usages: ReadonlyArray<Span.Span>): ReadonlyArray<HelpDoc.HelpDoc> => [
  HelpDoc.h1(Span.code(name)),
  HelpDoc.p(`${name} ${version} -- ${summary}`),
  HelpDoc.h1("USAGE"),
  ...usages.map((usage) => HelpDoc.p(Span.concat(Span.text(`$ ${name} `), usage)))
]

/**
 * The help of the program, or of one of its commands. `@effect/cli` writes `$ intersession` alone for the usage of
 * a program made of commands, and `$ peer …` without the program's name for a command's: both are written here
 * from the commands' own usage and help, in the same form.
 */
const help = (version: string, command: string | undefined): HelpDoc.HelpDoc => {
  const usages = (usage: Usage.Usage) => Usage.enumerate(usage, cliConfig)
  const one = commands.find((candidate) => candidate.name === command)
  if (one !== undefined) return HelpDoc.blocks([...helpHead(version, one.usages.flatMap(usages)), one.help])
  const listed = commands.filter((command) => command.listed)
  return HelpDoc.blocks([
    ...helpHead(version, [
      ...listed.flatMap((command) => command.usages.flatMap(usages)),
      Span.text("--help | --version")
    ]),
    HelpDoc.h1("COMMANDS"),
    ...table(listed.map((command) => [command.name, command.description])),
    HelpDoc.h1("OPTIONS OF EVERY COMMAND"),
    ...table(builtIns),
    HelpDoc.p(`Run ${name} COMMAND --help for the options of a command.`)
  ])
}

const helpFlags: ReadonlySet<string> = new Set(["--help", "-h"])

/**
 * Whether the arguments ask for help, and whose: none, `--help` or `-h` ask for the program's; `COMMAND --help`
 * (or `--help COMMAND`) for a command's (`undefined` for the program), and `dead-letters list --help` for the
 * command of a command. Other arguments go to the command line.
 */
const helpAskedFor = (args: ReadonlyArray<string>): Option.Option<string | undefined> => {
  const others = args.filter((arg) => !helpFlags.has(arg))
  if (args.length === 0) return Option.some(undefined)
  if (args.length > 3 || others.length === args.length || others.length < args.length - 1) return Option.none()
  if (others.length === 0) return Option.some(undefined)
  const named = others.join(" ")
  return commands.some((command) => command.name === named) ? Option.some(named) : Option.none()
}

/** Whether `stream` may be coloured: a terminal, with neither `NO_COLOR` (https://no-color.org) nor `TERM=dumb`. */
const colourful = (stream: { readonly isTTY?: boolean | undefined }) =>
  stream.isTTY === true && (process.env["NO_COLOR"] ?? "") === "" && process.env["TERM"] !== "dumb"

// The escape sequences of `@effect/printer-ansi`: Select Graphic Rendition, `ESC [ … m`.
const ansiEscape = /\u001b\[[0-9;]*m/g
const plain = (args: ReadonlyArray<unknown>) =>
  args.map((arg) => typeof arg === "string" ? arg.replace(ansiEscape, "") : arg)

/**
 * `console` with the colours taken out of what goes to a stream that is not to be coloured. `@effect/cli` renders
 * its help and errors with colours and prints them through the `Console` service, with no option to leave them out.
 */
const uncoloured = (console: Console.Console): Console.Console => {
  const stdout = colourful(process.stdout)
  const stderr = colourful(process.stderr)
  return {
    ...console,
    log: (...args) => stdout ? console.log(...args) : console.log(...plain(args)),
    info: (...args) => stdout ? console.info(...args) : console.info(...plain(args)),
    error: (...args) => stderr ? console.error(...args) : console.error(...plain(args)),
    warn: (...args) => stderr ? console.warn(...args) : console.warn(...plain(args))
  }
}

/**
 * Runs the program on command-line arguments (`process.argv`: the runtime and the script, then the arguments).
 * `intersession demo-peer …`, the process the demo starts, is run by the same program but is no part of
 * {@link command}, so that no help shows it.
 *
 * @since 0.1.0
 * @category running
 */
export const run = (args: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const version = yield* packageVersion
    const original = yield* Effect.console
    const app = { name, version, summary: Span.text(summary) }
    // What the commands print is theirs and goes out as it is: only the help and errors of the command line lose
    // their colours.
    const asItIs = <Name extends string, R, E, A>(self: Command.Command<Name, R, E, A>) =>
      Command.transformHandler(self, (effect) => Effect.withConsole(effect, original))
    const cli = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
      effect.pipe(Effect.withConsole(uncoloured(original)), Effect.provideService(CliConfig.CliConfig, cliConfig))
    const rest = args.slice(2)
    if (rest[0] === "demo-peer") {
      return yield* cli(Command.run(asItIs(demoPeerCommand), app)([...args.slice(0, 2), ...rest.slice(1)]))
    }
    const asked = helpAskedFor(rest)
    if (Option.isSome(asked)) return yield* cli(Console.log(HelpDoc.toAnsiText(help(version, asked.value))))
    return yield* cli(Command.run(asItIs(command), app)(args))
  })
