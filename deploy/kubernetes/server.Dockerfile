# The hodei-server image for deploy/kubernetes/server.yaml.
#
#   docker build -f deploy/kubernetes/server.Dockerfile -t hodei-server:latest .
#
# (run from the repository root). Non-root (uid 10001), read-only root
# filesystem friendly (writes only to /tmp, an emptyDir in the manifest).

# ---- build the server ------------------------------------------------------
FROM rust:1-slim-bookworm AS build
WORKDIR /src
RUN apt-get update \
    && apt-get install -y --no-install-recommends pkg-config \
    && rm -rf /var/lib/apt/lists/*
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release -p hodei-examples --bin hodei-server \
    && cp target/release/hodei-server /hodei-server

# ---- runtime ----------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 hodei \
    && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin hodei
COPY --from=build /hodei-server /usr/local/bin/hodei-server
ENV TMPDIR=/tmp NO_COLOR=1
USER 10001:10001
EXPOSE 50051 8080
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/hodei-server"]
