# syntax=docker/dockerfile:1
# Build: docker build -t spillway:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rust-toolchain.toml ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin spillway \
 && strip target/release/spillway

# distroless: glibc and CA certificates, no shell, runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/spillway /spillway
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/spillway"]
CMD ["run"]
