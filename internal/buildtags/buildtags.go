// Package buildtags holds the build tags of a deployed bootstrap, for the
// tools that build one themselves (scripts/invoke, scripts/bench and the
// tests that run the real binaries). The Makefile's GOFLAGS_BUILD, which
// `make build` and `sam build` use, must name the same tags; a test holds
// them together.
package buildtags

// Lambda are the tags of a deployed bootstrap:
//   - lambda.norpc drops aws-lambda-go's legacy net/rpc mode, which the
//     provided.al2023 runtime never uses;
//   - nethttpomithttp2 leaves net/http's bundled HTTP/2 out. The functions
//     speak only to the Runtime API (HTTP/1.1), SQS, Secrets Manager and
//     SQIBS, all of which serve HTTP/1.1; it takes 0.33 MB off each
//     bootstrap and some start-up work. A Go release without the tag would
//     only build a larger binary, never a broken one.
const Lambda = "lambda.norpc,nethttpomithttp2"
