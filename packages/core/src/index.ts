/**
 * @since 0.1.0
 */
export * as Backend from "./Backend.js"
/**
 * @since 0.2.0
 */
export * as Binary from "./Binary.js"
/**
 * @since 0.3.0
 */
export * as Channel from "./Channel.js"
/**
 * @since 0.3.0
 */
export * as DeadLetters from "./DeadLetters.js"
/**
 * @since 0.1.0
 */
export * as Delivery from "./Delivery.js"
/**
 * @since 0.1.0
 */
export * as Frame from "./Frame.js"
/**
 * @since 0.3.0
 */
export * as Framing from "./Framing.js"
/**
 * @since 0.1.0
 */
export * as ILM from "./ILM.js"
/**
 * @since 0.1.0
 */
export * as IlmConfig from "./IlmConfig.js"
/**
 * @since 0.1.0
 */
export * as IlmError from "./IlmError.js"
/**
 * @since 0.1.0
 */
export * as IlmEvent from "./IlmEvent.js"
/**
 * @since 0.1.0
 */
export * as IlmMetrics from "./IlmMetrics.js"
/**
 * @since 0.1.0
 */
export * as Incarnation from "./Incarnation.js"
/**
 * @since 0.1.0
 */
export * as Lane from "./Lane.js"
/**
 * @since 0.1.0
 */
export * as Message from "./Message.js"
/**
 * @since 0.1.0
 */
export * as Network from "./Network.js"
/**
 * @since 0.1.0
 */
export * as PeerId from "./PeerId.js"
/**
 * @since 0.2.0
 */
export * as StreamKey from "./StreamKey.js"
