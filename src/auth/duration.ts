/** `15m`, `900s`, `900` (seconds), `1h`, `7d` → seconds. Throws on anything else. */
export function durationToSeconds (value: string): number {
  const match = /^(\d{1,6})(s|m|h|d)?$/.exec(value.trim())
  if (match === null) throw new Error(`not a duration: ${JSON.stringify(value)} (use e.g. 900, 900s, 15m, 1h)`)
  const amount = Number(match[1])
  const unit = match[2] ?? 's'
  const factor = unit === 'd' ? 86_400 : unit === 'h' ? 3600 : unit === 'm' ? 60 : 1
  return amount * factor
}
