/**
 * Copies small byte strings end to end into shared chunks and hands out views on them: a message then costs a view,
 * not a buffer of its own, which the allocator and the garbage collector pay dearly for. A chunk lives as long as
 * any view on it; large strings get a buffer of their own, so a chunk never pins much more than it holds.
 *
 * @internal
 */
export class Slab {
  private chunk: Uint8Array
  private used = 0

  constructor(private readonly chunkSize = 64 * 1024) {
    this.chunk = new Uint8Array(0)
  }

  /** `size` bytes to fill, as a view. */
  alloc(size: number): Uint8Array {
    if (size > this.chunkSize >>> 3) return new Uint8Array(size)
    if (this.used + size > this.chunk.length) {
      this.chunk = new Uint8Array(this.chunkSize)
      this.used = 0
    }
    const view = this.chunk.subarray(this.used, this.used + size)
    this.used += size
    return view
  }

  /** A copy of `bytes`. */
  copy(bytes: Uint8Array): Uint8Array {
    const view = this.alloc(bytes.length)
    view.set(bytes)
    return view
  }
}
