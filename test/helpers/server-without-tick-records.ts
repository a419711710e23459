/**
 * The server exactly as src/server.ts runs it, minus hold-tick-records.ts: the control for
 * test/tick-records.test.ts and `npm run bench:instructions`.
 */
import { main } from '../../src/main.js'

void main()
