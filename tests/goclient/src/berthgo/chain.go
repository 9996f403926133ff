package main

import (
	"context"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
)

// context_ keeps the callback signatures short.
type context_ = context.Context

func identityChainID(diffIDs []digest.Digest) string {
	return identity.ChainID(diffIDs).String()
}
