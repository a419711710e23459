/**
 * The server exactly as src/server.ts runs it, minus hold-tick-records.ts: the control for
 * bench/tick-records.ts (`npm run bench:instructions`).
 */
import { main } from '../src/main.js'

void main()
