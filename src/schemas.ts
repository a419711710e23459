/** Schemas shared by several route files. */
import { Type } from 'typebox'

export const ErrorSchema = Type.Object({
  statusCode: Type.Integer(),
  error: Type.String(),
  message: Type.String(),
}, { $id: 'Error', description: 'Every error response has this shape.' })
