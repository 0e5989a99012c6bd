/**
 * `Message` and `MessageId` values built from fields the engine has already checked. A schema class's constructor
 * copies its argument, merges defaults and, unless told not to, validates; with validation off it still costs more
 * than the rest of a delivery. These build the same value — an object with the class's prototype and the fields as
 * its own properties, which is what the class constructor leaves — directly.
 *
 * @internal
 */
import { Message, MessageId } from "../../Message.js"

export const message = (fields: ConstructorParameters<typeof Message>[0]): Message => {
  const value: Message = Object.create(Message.prototype)
  return Object.assign(value, fields)
}

export const messageId = (fields: ConstructorParameters<typeof MessageId>[0]): MessageId => {
  const value: MessageId = Object.create(MessageId.prototype)
  return Object.assign(value, fields)
}
