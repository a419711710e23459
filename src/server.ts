/**
 * The process entry (`npm start` runs its build): first hold-tick-records.ts, before any
 * other module is evaluated, then the server (main.ts).
 */
import './hold-tick-records.js'
import { main } from './main.js'

void main()
