"""The openSMILE acoustic-features baseline: functionals once per corpus, then a scikit-learn classifier."""
