// A minimal typed event emitter (no framework, works in browsers and Node).

type Listener = (...args: unknown[]) => void;

export class Emitter<Events extends { [K in keyof Events]: unknown[] }> {
  // Listeners are stored untyped; `on` and `emit` keep the types.
  private readonly listeners = new Map<keyof Events, Set<Listener>>();

  /** Calls `listener` for each `event`; returns a function that stops it. */
  on<K extends keyof Events>(event: K, listener: (...args: Events[K]) => void): () => void {
    let set = this.listeners.get(event);
    if (!set) {
      set = new Set();
      this.listeners.set(event, set);
    }
    set.add(listener as unknown as Listener);
    return () => this.off(event, listener);
  }

  off<K extends keyof Events>(event: K, listener: (...args: Events[K]) => void): void {
    this.listeners.get(event)?.delete(listener as unknown as Listener);
  }

  protected emit<K extends keyof Events>(event: K, ...args: Events[K]): void {
    const set = this.listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        (listener as unknown as (...a: Events[K]) => void)(...args);
      } catch (e) {
        // A listener's bug must not break the connection.
        console.error("courier: event listener failed", e);
      }
    }
  }
}
