/**
 * Which client's message came first: the order `uploads()` yields in.
 *
 * @module
 */

/** A binary min-heap of client ids keyed by the arrival number of their oldest queued message. */
export class ArrivalHeap {
  #ids: number[] = [];
  #keys: number[] = [];
  #members = new Set<number>();

  /**
   * Whether `id` is in the heap.
   *
   * @param id A client id.
   * @returns `true` if pushed and not yet popped.
   */
  has(id: number): boolean {
    return this.#members.has(id);
  }

  /**
   * Adds a client.
   *
   * @param id The client id.
   * @param key The arrival number of its oldest queued message.
   */
  push(id: number, key: number): void {
    this.#members.add(id);
    let i = this.#ids.length;
    this.#ids.push(id);
    this.#keys.push(key);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (this.#keys[parent] <= key) break;
      this.#swap(i, parent);
      i = parent;
    }
  }

  /**
   * Removes the client with the earliest message.
   *
   * @returns Its id, or `undefined` when empty.
   */
  pop(): number | undefined {
    if (this.#ids.length === 0) return undefined;
    const top = this.#ids[0];
    this.#members.delete(top);
    const lastId = this.#ids.pop()!;
    const lastKey = this.#keys.pop()!;
    if (this.#ids.length > 0) {
      this.#ids[0] = lastId;
      this.#keys[0] = lastKey;
      let i = 0;
      while (true) {
        const left = 2 * i + 1;
        const right = left + 1;
        let smallest = i;
        if (left < this.#keys.length && this.#keys[left] < this.#keys[smallest]) smallest = left;
        if (right < this.#keys.length && this.#keys[right] < this.#keys[smallest]) smallest = right;
        if (smallest === i) break;
        this.#swap(i, smallest);
        i = smallest;
      }
    }
    return top;
  }

  #swap(a: number, b: number): void {
    [this.#ids[a], this.#ids[b]] = [this.#ids[b], this.#ids[a]];
    [this.#keys[a], this.#keys[b]] = [this.#keys[b], this.#keys[a]];
  }
}
