# ---- build: compile TypeScript and produce production-only node_modules ----
FROM node:24-bookworm-slim AS build
WORKDIR /app

# Toolchain for better-sqlite3's native addon (node-gyp). Build stage only.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*

COPY package.json package-lock.json ./
RUN npm ci

COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY plugins ./plugins
COPY routes ./routes
RUN npm run build \
 && npm prune --omit=dev

# ---- runtime: production deps + compiled JS only, non-root ----
FROM node:24-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app

# Code stays root-owned (read-only for the app user); only the data dir is writable.
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/package.json ./package.json

RUN mkdir -p /app/data && chown node:node /app/data
VOLUME /app/data

ENV DATABASE_PATH=/app/data/ai-capital.db HOST=0.0.0.0 PORT=3000

USER node
EXPOSE 3000

HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 3000) + '/api/health/live', { signal: AbortSignal.timeout(4000) }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]

# Exec form: node is PID 1 and receives SIGTERM directly (no npm/sh in between). Node flags,
# if any, are the package.json start script's (test/deploy/docker.test.ts checks they agree).
CMD ["node", "dist/src/server.js"]
