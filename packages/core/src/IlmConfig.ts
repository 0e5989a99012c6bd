/**
 * Settings of the engine, with documented defaults.
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import type { DeliveryPolicy } from "./Delivery.js"
import { isLane } from "./Lane.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface IlmConfig {
  /** Unacknowledged messages in flight per stream. 1 is the original crate's stop-and-wait. */
  readonly window: number
  /**
   * Payload bytes in flight per stream. A message larger than this still goes, alone. A receiver buffers at most
   * this much out of order per stream.
   */
  readonly windowBytes: number
  /**
   * Payload bytes of outbound messages kept in memory, over all streams, so that they are sent and resent without
   * being read back from the store. Messages beyond it, and messages for a peer that is not linked, wait in the
   * store only.
   */
  readonly sendBufferBytes: number
  /** How long the receiver may hold an acknowledgement to coalesce it with later ones. */
  readonly ackDelay: Duration.Duration
  /** Retransmission timeout before a round trip has been measured. */
  readonly retransmitInitial: Duration.Duration
  /** Lower bound of the adaptive retransmission timeout. */
  readonly retransmitMin: Duration.Duration
  /** Upper bound of the adaptive retransmission timeout, back-off included. */
  readonly retransmitMax: Duration.Duration
  /** Factor the timeout grows by after each retransmission without progress. */
  readonly retransmitBackoff: number
  /** First interval between unanswered `Hello`s; it doubles up to `helloMax`. */
  readonly helloInitial: Duration.Duration
  /** Longest interval between unanswered `Hello`s. */
  readonly helloMax: Duration.Duration
  /** First wait before a failed delivery is retried; it doubles up to `deliveryRetryMax`. */
  readonly deliveryRetryInitial: Duration.Duration
  /** Longest wait between delivery retries. */
  readonly deliveryRetryMax: Duration.Duration
  /**
   * How failed deliveries are retried on every lane without a policy of its own in `lanePolicies`, and when the
   * message moves to dead letters instead. The default retries forever.
   */
  readonly deliveryPolicy: DeliveryPolicy
  /** Delivery policies of single lanes, by lane name: each replaces `deliveryPolicy` on its lane. */
  readonly lanePolicies: Readonly<Record<string, DeliveryPolicy>>
  /**
   * How often the store is asked to remove expired messages. A receiver never delivers an expired message, however
   * long its removal waits: this only bounds how long one stays stored.
   */
  readonly expiryCheckInterval: Duration.Duration
  /** Largest payload `send` accepts and a receiver takes. Both peers should agree. */
  readonly maxPayloadBytes: number
  /** Unacknowledged messages stored per destination peer before `whenFull` applies. */
  readonly maxPendingPerPeer: number
  /** What `send` does when a peer's outbox is full: wait for room, or fail with `OutboxFullError`. */
  readonly whenFull: "wait" | "fail"
  /** Most messages one backend call or one network write carries. */
  readonly maxBatch: number
}

/**
 * The defaults: a window of 2,048 messages and 16 MiB per stream (two batches in flight while the receiver commits
 * one), 16 MiB of outbound messages kept in memory, acknowledgements sent as soon as the receiver is idle, a
 * retransmission timeout of 1 s until measured, kept between 200 ms and 60 s and doubled per retransmission;
 * `Hello` every 1 s up to 30 s; delivery retried after 100 ms up to every 30 s, forever; expired messages removed every
 * second; payloads up to 1 MiB; up to
 * 1,000,000 pending messages per peer, after which `send` waits; batches of up to 1,024.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaults: IlmConfig = {
  window: 2048,
  windowBytes: 16 * 1024 * 1024,
  sendBufferBytes: 16 * 1024 * 1024,
  ackDelay: Duration.zero,
  retransmitInitial: Duration.seconds(1),
  retransmitMin: Duration.millis(200),
  retransmitMax: Duration.seconds(60),
  retransmitBackoff: 2,
  helloInitial: Duration.seconds(1),
  helloMax: Duration.seconds(30),
  deliveryRetryInitial: Duration.millis(100),
  deliveryRetryMax: Duration.seconds(30),
  deliveryPolicy: {},
  lanePolicies: {},
  expiryCheckInterval: Duration.seconds(1),
  maxPayloadBytes: 1024 * 1024,
  maxPendingPerPeer: 1_000_000,
  whenFull: "wait",
  maxBatch: 1024
}

/**
 * Options as users write them: any subset of {@link IlmConfig}, with durations in any `Duration.DurationInput` form.
 *
 * @since 0.1.0
 * @category models
 */
export type Options = {
  readonly [K in keyof IlmConfig]?:
    | (IlmConfig[K] extends Duration.Duration ? Duration.DurationInput : IlmConfig[K])
    | undefined
}

/**
 * A setting is out of range.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidConfigError extends Data.TaggedError("InvalidConfigError")<{
  readonly problems: ReadonlyArray<string>
}> {
  override get message(): string {
    return `Invalid engine settings: ${this.problems.join("; ")}`
  }
}

const durationKeys = [
  "ackDelay",
  "retransmitInitial",
  "retransmitMin",
  "retransmitMax",
  "helloInitial",
  "helloMax",
  "deliveryRetryInitial",
  "deliveryRetryMax",
  "expiryCheckInterval"
] as const

const decodeDuration = (input: Duration.DurationInput | undefined, fallback: Duration.Duration) =>
  input === undefined ? Either.right(fallback) : Either.fromOption(Duration.decodeUnknown(input), () => input)

const checkPolicy = (name: string, policy: DeliveryPolicy, problems: Array<string>) => {
  const attempts = policy.attempts
  if (attempts !== undefined && !(Number.isSafeInteger(attempts) && attempts >= 1)) {
    problems.push(`${name}.attempts must be an integer >= 1, got ${attempts}`)
  }
}

/**
 * Fills in defaults and checks every setting, listing each problem.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Either.Either<IlmConfig, InvalidConfigError> => {
  const problems: Array<string> = []
  const durations: Partial<Record<(typeof durationKeys)[number], Duration.Duration>> = {}
  for (const key of durationKeys) {
    const decoded = decodeDuration(options[key], defaults[key])
    if (Either.isLeft(decoded)) problems.push(`${key} is not a duration: ${String(decoded.left)}`)
    else durations[key] = decoded.right
  }
  const config: IlmConfig = {
    ...defaults,
    ...durations,
    window: options.window ?? defaults.window,
    windowBytes: options.windowBytes ?? defaults.windowBytes,
    sendBufferBytes: options.sendBufferBytes ?? defaults.sendBufferBytes,
    retransmitBackoff: options.retransmitBackoff ?? defaults.retransmitBackoff,
    maxPayloadBytes: options.maxPayloadBytes ?? defaults.maxPayloadBytes,
    maxPendingPerPeer: options.maxPendingPerPeer ?? defaults.maxPendingPerPeer,
    whenFull: options.whenFull ?? defaults.whenFull,
    maxBatch: options.maxBatch ?? defaults.maxBatch,
    deliveryPolicy: options.deliveryPolicy ?? defaults.deliveryPolicy,
    lanePolicies: options.lanePolicies ?? defaults.lanePolicies
  }
  const integer = (
    key: "window" | "windowBytes" | "sendBufferBytes" | "maxPayloadBytes" | "maxPendingPerPeer" | "maxBatch",
    min: number
  ) => {
    const value = config[key]
    if (!Number.isSafeInteger(value) || value < min) problems.push(`${key} must be an integer >= ${min}, got ${value}`)
  }
  integer("window", 1)
  integer("windowBytes", 1)
  integer("sendBufferBytes", 0)
  integer("maxPayloadBytes", 0)
  integer("maxPendingPerPeer", 1)
  integer("maxBatch", 1)
  if (!(config.retransmitBackoff >= 1)) {
    problems.push(`retransmitBackoff must be >= 1, got ${config.retransmitBackoff}`)
  }
  if (config.whenFull !== "wait" && config.whenFull !== "fail") {
    problems.push(`whenFull must be "wait" or "fail", got ${String(config.whenFull)}`)
  }
  for (
    const [low, high] of [["retransmitMin", "retransmitMax"], ["helloInitial", "helloMax"], [
      "deliveryRetryInitial",
      "deliveryRetryMax"
    ]] as const
  ) {
    if (Duration.greaterThan(config[low], config[high])) problems.push(`${low} must not exceed ${high}`)
    if (!Duration.greaterThan(config[low], Duration.zero)) problems.push(`${low} must be positive`)
  }
  checkPolicy("deliveryPolicy", config.deliveryPolicy, problems)
  for (const [lane, policy] of Object.entries(config.lanePolicies)) {
    const name = JSON.stringify(lane.slice(0, 40))
    if (!isLane(lane)) problems.push(`lanePolicies: ${name} is not a lane name`)
    checkPolicy(`lanePolicies[${name}]`, policy, problems)
  }
  if (!Duration.greaterThan(config.expiryCheckInterval, Duration.zero)) {
    problems.push("expiryCheckInterval must be positive")
  }
  return problems.length === 0 ? Either.right(config) : Either.left(new InvalidConfigError({ problems }))
}

/**
 * Reads the settings from the `ConfigProvider` (environment variables by default), each optional with the
 * default above: `window`, `windowBytes`, `sendBufferBytes`, `ackDelay`, `retransmitInitial`, `retransmitMin`, `retransmitMax`,
 * `retransmitBackoff`, `helloInitial`, `helloMax`, `deliveryRetryInitial`, `deliveryRetryMax`, `expiryCheckInterval`,
 * `maxPayloadBytes`,
 * `maxPendingPerPeer`, `whenFull` and `maxBatch`. Nest it (`Config.nested(config, "ILM")`) to add a prefix.
 * Delivery policies hold schedules, which are code: it leaves them at their default (retry forever).
 *
 * @since 0.1.0
 * @category config
 */
export const config: Config.Config<IlmConfig> = Config.all({
  window: Config.integer("window").pipe(
    Config.withDefault(defaults.window),
    Config.withDescription("Unacknowledged messages in flight per stream")
  ),
  windowBytes: Config.integer("windowBytes").pipe(
    Config.withDefault(defaults.windowBytes),
    Config.withDescription("Payload bytes in flight per stream")
  ),
  sendBufferBytes: Config.integer("sendBufferBytes").pipe(
    Config.withDefault(defaults.sendBufferBytes),
    Config.withDescription("Payload bytes of outbound messages kept in memory over all streams")
  ),
  ackDelay: Config.duration("ackDelay").pipe(
    Config.withDefault(defaults.ackDelay),
    Config.withDescription("How long a receiver may hold an acknowledgement to coalesce it")
  ),
  retransmitInitial: Config.duration("retransmitInitial").pipe(
    Config.withDefault(defaults.retransmitInitial),
    Config.withDescription("Retransmission timeout before a round trip is measured")
  ),
  retransmitMin: Config.duration("retransmitMin").pipe(
    Config.withDefault(defaults.retransmitMin),
    Config.withDescription("Lower bound of the retransmission timeout")
  ),
  retransmitMax: Config.duration("retransmitMax").pipe(
    Config.withDefault(defaults.retransmitMax),
    Config.withDescription("Upper bound of the retransmission timeout")
  ),
  retransmitBackoff: Config.number("retransmitBackoff").pipe(
    Config.withDefault(defaults.retransmitBackoff),
    Config.withDescription("Growth factor of the retransmission timeout per retransmission")
  ),
  helloInitial: Config.duration("helloInitial").pipe(
    Config.withDefault(defaults.helloInitial),
    Config.withDescription("First interval between unanswered Hellos")
  ),
  helloMax: Config.duration("helloMax").pipe(
    Config.withDefault(defaults.helloMax),
    Config.withDescription("Longest interval between unanswered Hellos")
  ),
  deliveryRetryInitial: Config.duration("deliveryRetryInitial").pipe(
    Config.withDefault(defaults.deliveryRetryInitial),
    Config.withDescription("First wait before a failed delivery is retried")
  ),
  deliveryRetryMax: Config.duration("deliveryRetryMax").pipe(
    Config.withDefault(defaults.deliveryRetryMax),
    Config.withDescription("Longest wait between delivery retries")
  ),
  expiryCheckInterval: Config.duration("expiryCheckInterval").pipe(
    Config.withDefault(defaults.expiryCheckInterval),
    Config.withDescription("How often expired messages are removed from the store")
  ),
  maxPayloadBytes: Config.integer("maxPayloadBytes").pipe(
    Config.withDefault(defaults.maxPayloadBytes),
    Config.withDescription("Largest payload accepted, in bytes")
  ),
  maxPendingPerPeer: Config.integer("maxPendingPerPeer").pipe(
    Config.withDefault(defaults.maxPendingPerPeer),
    Config.withDescription("Unacknowledged messages stored per peer before whenFull applies")
  ),
  whenFull: Config.literal("wait", "fail")("whenFull").pipe(
    Config.withDefault(defaults.whenFull),
    Config.withDescription("What send does when an outbox is full: wait or fail")
  ),
  maxBatch: Config.integer("maxBatch").pipe(
    Config.withDefault(defaults.maxBatch),
    Config.withDescription("Most messages one backend call or network write carries")
  ),
  // Schedules are code, not configuration text: set the policies with `ILM.layer` options.
  deliveryPolicy: Config.succeed(defaults.deliveryPolicy),
  lanePolicies: Config.succeed(defaults.lanePolicies)
})
