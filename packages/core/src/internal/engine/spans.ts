/**
 * The engine's spans, and the trace context a message carries from its `send` to its delivery.
 *
 * - `intersession.append`: one per batch the appender stores; a child of the caller's span when the caller's fiber
 *   stores it, else a root linked to the spans its messages were sent in.
 * - `intersession.transmit`: one per network write of the pump (`Data` and `Skip` frames, first sends and resends),
 *   linked to the spans its messages were sent in.
 * - `intersession.deliver`: one per delivery batch of an inbound stream; inside it, an `intersession.deliver.message`
 *   per message that carries a trace context, linked to the span it was sent in, around its `Delivery`.
 *
 * Spans are opened per batch, never per message (except for a message whose sender asked for tracing), and only
 * when the fiber's tracer records them: Effect's built-in tracer keeps its spans nowhere (they serve
 * `Effect.currentSpan` and stack traces), and a span costs allocations (ids, attributes, links). A program that
 * provides a tracer (`@effect/opentelemetry`, `Layer.setTracer`) gets them all; others pay one check per batch. For
 * the same reason `send` captures its span's context only under such a tracer.
 *
 * @internal
 */
import * as Context from "effect/Context"
import * as DefaultServices from "effect/DefaultServices"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import * as Tracer from "effect/Tracer"
import type { TraceContext } from "../../Frame.js"

/** Effect's built-in tracer, which every fiber has unless a program provides another. */
const builtIn = Context.get(DefaultServices.liveServices, Tracer.Tracer)

/** Whether spans opened on this fiber are recorded somewhere. */
export const recording = (fiber: Fiber.RuntimeFiber<unknown, unknown>): boolean =>
  fiber.currentTracer !== builtIn && fiber.getFiberRef(FiberRef.currentTracerEnabled)

/**
 * Runs `effect` in a span when the fiber's tracer records spans, and as it is otherwise. `options` is called only
 * then, so attributes cost nothing untraced. No stack trace is captured: it costs an `Error` per span.
 */
export const withSpan = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
  name: string,
  options: () => Tracer.SpanOptions
): Effect.Effect<A, E, R> =>
  Effect.withFiberRuntime<A, E, R>((fiber) =>
    recording(fiber) ? Effect.withSpan(effect, name, { ...options(), captureStackTrace: false }) : effect
  )

const traceId = /^[0-9a-f]{32}$/
const spanId = /^[0-9a-f]{16}$/
const zeros = /^0+$/

/** The last span captured, and its context: a loop of sends in one span captures it once. */
let lastSpan: Tracer.AnySpan | undefined
let lastContext: TraceContext | undefined

/**
 * The context of the span the fiber runs in, if it is in one that a recording tracer made and that propagates, and
 * its ids are W3C ones (lowercase hex, not all zeros; a tracer with other ids cannot be carried).
 */
export const traceContext = (fiber: Fiber.RuntimeFiber<unknown, unknown>): TraceContext | undefined => {
  const span = fiber.currentSpan
  if (span === undefined) return undefined
  if (span === lastSpan) return lastContext
  if (!recording(fiber) || Context.get(span.context, Tracer.DisablePropagation)) return undefined
  const context = traceId.test(span.traceId) && spanId.test(span.spanId) && !zeros.test(span.traceId) &&
      !zeros.test(span.spanId)
    ? { traceId: span.traceId, spanId: span.spanId, sampled: span.sampled }
    : undefined
  lastSpan = span
  lastContext = context
  return context
}

/** A link to the span a message was sent in. */
export const linkTo = (trace: TraceContext): Tracer.SpanLink => ({
  _tag: "SpanLink",
  span: Tracer.externalSpan(trace),
  attributes: {}
})

/** Links to these distinct trace contexts, leaving out the fiber's own span and keeping at most `max`. */
export const linksTo = (
  traces: Iterable<TraceContext | undefined>,
  except: TraceContext | undefined,
  max = 32
): Array<Tracer.SpanLink> => {
  const seen = new Set<string>()
  if (except !== undefined) seen.add(except.spanId)
  const links: Array<Tracer.SpanLink> = []
  for (const trace of traces) {
    if (trace === undefined || seen.has(trace.spanId)) continue
    seen.add(trace.spanId)
    links.push(linkTo(trace))
    if (links.length === max) break
  }
  return links
}
