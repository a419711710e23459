/** Runs `task` over `items` with at most `concurrency` running at once; results stay in order. */
export async function mapSettledLimit<I, O> (
  items: readonly I[],
  concurrency: number,
  task: (item: I) => Promise<O>,
): Promise<Array<PromiseSettledResult<O>>> {
  const results = new Array<PromiseSettledResult<O>>(items.length)
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const index = next++
      try {
        results[index] = { status: 'fulfilled', value: await task(items[index] as I) }
      } catch (reason) {
        results[index] = { status: 'rejected', reason }
      }
    }
  }
  const workers = Array.from({ length: Math.max(1, Math.min(concurrency, items.length)) }, worker)
  await Promise.all(workers)
  return results
}
