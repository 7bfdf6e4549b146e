package bd

import (
	"errors"

	"github.com/sealfs/sealfs/errs"
)

func errorsIsAuth(err error) bool { return errors.Is(err, errs.ErrAuthentication) }
