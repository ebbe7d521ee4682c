// Reconnect delays: exponential from `minMs` to `maxMs`, with full jitter (a random
// delay between half and all of it), so a server restart does not bring every client
// back in the same millisecond.

export interface BackoffOptions {
  minMs: number;
  maxMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { minMs: 500, maxMs: 30_000 };

/** The delay before reconnect attempt `attempt` (0 = the first). */
export function backoffDelay(
  attempt: number,
  options: BackoffOptions = DEFAULT_BACKOFF,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(options.maxMs, options.minMs * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}
